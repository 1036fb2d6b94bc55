# The two commands of the README. Each runs the idempotent set-up first (seconds when done).
.PHONY: setup demo doctor test

setup:
	bash scripts/setup.sh

# The main job: what CRPO does, on the bundled clinical task, on CPU (a small model it makes,
# a cold start, GRPO and CRPO arms from it, held-out tables; docs/demo.md). Output in
# runs/demo. Optimised: the demo then takes 1.5–2.5 minutes on two cores.
demo: setup
	cargo build --release -p crpo-host --bins
	target/release/crpo-host demo --out runs/demo --overwrite

# What this installation runs on: versions, libtorch, CUDA devices.
doctor: setup
	cargo build -p crpo-host --bins
	target/debug/crpo-host doctor

# The whole suite: plain `cargo test --workspace` (reward and dataset crates depend on crpo-sdk
# alone and never link libtorch; policy crates use crpo-policy-sdk).
test: setup
	cargo test --workspace
