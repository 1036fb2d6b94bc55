use crpo_sdk::{DatasetPlugin, DatasetSource};
use {{ident}}::Reader;

#[test]
fn reads_good_lines_and_names_bad_ones() {
    let path = std::env::temp_dir().join(format!("{{ident}}-{}.jsonl", std::process::id()));
    let lines = [
        r#"{"question": "Which drug reverses heparin?", "options": {"A": "Vitamin K", "B": "Protamine"}, "answer": "B"}"#,
        r#"{"question": "Dose in mg?", "answer": "140"}"#,
        r#"{"question": "Which?", "options": {"A": "x"}, "answer": "C"}"#,
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let source = DatasetSource { path: path.clone(), options: serde_json::Value::Null };
    let read = Reader.read(&source).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(read.examples.len(), 2);
    assert_eq!(read.examples[0].option_text("B"), Some("Protamine"));
    assert_eq!(read.examples[1].answer.as_deref(), Some("140"));
    assert_eq!((read.malformed[0].line, read.malformed[0].field.as_str()), (3, "answer"));
}
