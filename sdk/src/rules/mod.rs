//! The reading rules the built-in clinical objectives apply to a completion, for plugin
//! authors to reuse so their objectives read a completion exactly as the built-ins do
//! (the built-ins call these very functions, so the two cannot drift; docs/reward-rules.md).
//!
//! ```
//! use crpo_sdk::rules::{chosen_letter, clauses, names_option, preprocess, reasoning};
//! use crpo_sdk::AnswerOption;
//!
//! let completion = "<think>Fever suggests pneumonia; option C does not fit.</think>\
//!                   <answer>\\boxed{B}</answer><|im_end|>ignored";
//! assert!(preprocess(completion).ends_with("</answer>"));
//! assert_eq!(chosen_letter(completion), Some('B'));
//! let clauses = clauses(reasoning(completion));
//! assert_eq!(clauses, ["fever suggests pneumonia", "option c does not fit"]);
//! let pneumonia = AnswerOption { key: "B".into(), text: "Pneumonia".into() };
//! assert!(names_option(&clauses[0], &pneumonia));
//! ```

mod boxed;
mod free_text;
mod reasoning;
mod text;

pub use boxed::{boxed_answer, chosen_letter, chosen_option, last_boxed, BoxedAnswer};
pub use free_text::{free_text_answer, normalise_answer, parse_number, same_answer};
pub use reasoning::{clauses, names_option, reasoning};
pub use text::{
    is_named, is_named_in_normalised, is_python_space, normalise, preprocess, python_strip, PY_SPACE,
};
