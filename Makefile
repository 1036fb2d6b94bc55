# The two commands of the README. Each runs the idempotent set-up first (seconds when done).
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

# The main job. For now: what this installation runs on (the clinical demo replaces it).
demo: setup
	cargo run -p crpo-host -- doctor

test: setup
	cargo test --workspace
