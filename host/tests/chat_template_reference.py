"""Renders a chat template with transformers' apply_chat_template, for
tests/transformers_parity.rs. Usage: python chat_template_reference.py MODEL_DIR MESSAGES_JSON"""
import json
import sys

from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
for add_generation_prompt in (True, False):
    text = tokenizer.apply_chat_template(
        json.loads(sys.argv[2]), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    print(json.dumps(text))
