# The two commands of the README. Each runs the idempotent set-up first (seconds when done).
.PHONY: setup demo demo-compare doctor test

# Crates that depend on crpo-sdk without its `tch` feature: tested in their own cargo run, so
# that the host's use of the feature (which links libtorch) is not unified into them, just as
# a third-party plugin author builds them.
SDK_ONLY = crpo-sdk crpo-plugins-rewards crpo-plugins-datasets contraindication-safety csv-dataset

setup:
	bash scripts/setup.sh

# The main job: the Clinical-R1 recipe on the bundled demo set, on CPU (a small model it
# makes, cold-start SFT, CRPO, before/after table). Output in runs/demo.
demo: setup
	cargo build -p crpo-host --bins
	target/debug/crpo-host demo --out runs/demo --overwrite

# The same, plus the GRPO baseline from the same cold start, side by side.
demo-compare: setup
	cargo build -p crpo-host --bins
	target/debug/crpo-host demo --out runs/demo --overwrite --compare-grpo

# What this installation runs on: versions, libtorch, CUDA devices.
doctor: setup
	cargo build -p crpo-host --bins
	target/debug/crpo-host doctor

test: setup
	cargo test $(addprefix -p ,$(SDK_ONLY))
	cargo test --workspace $(addprefix --exclude ,$(filter-out crpo-sdk,$(SDK_ONLY)))
