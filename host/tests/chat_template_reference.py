"""Renders a chat template with transformers' apply_chat_template, for
tests/transformers_parity.rs: with and without the generation prompt, then as TRL renders a
prompt to generate from (a final assistant message continued).
Usage: python chat_template_reference.py MODEL_DIR MESSAGES_JSON"""
import json
import sys

from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
messages = json.loads(sys.argv[2])
for add_generation_prompt in (True, False):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    print(json.dumps(text))
# trl.data_utils.maybe_apply_chat_template's choice for a prompt.
prefill = messages[-1]["role"] == "assistant"
text = tokenizer.apply_chat_template(
    messages, tokenize=False, add_generation_prompt=not prefill, continue_final_message=prefill
)
print(json.dumps(text))
