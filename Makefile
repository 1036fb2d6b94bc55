# The two commands of the README. Each runs the idempotent set-up first (seconds when done).
.PHONY: setup demo doctor test

# Crates that depend on crpo-sdk without its `tch` feature: tested in their own cargo run, so
# that the host's use of the feature (which links libtorch) is not unified into them, just as
# a third-party plugin author builds them.
SDK_ONLY = crpo-sdk crpo-plugins-rewards crpo-plugins-datasets contraindication-safety csv-dataset

setup:
	bash scripts/setup.sh

# The main job: what CRPO does, on the bundled clinical task, on CPU (a small model it makes,
# a cold start, GRPO and CRPO arms from it, held-out tables; docs/demo.md). Output in
# runs/demo. Optimised: the demo then takes about three minutes on two cores.
demo: setup
	cargo build --release -p crpo-host --bins
	target/release/crpo-host demo --out runs/demo --overwrite

# What this installation runs on: versions, libtorch, CUDA devices.
doctor: setup
	cargo build -p crpo-host --bins
	target/debug/crpo-host doctor

test: setup
	cargo test $(addprefix -p ,$(SDK_ONLY))
	cargo test --workspace $(addprefix --exclude ,$(filter-out crpo-sdk,$(SDK_ONLY)))
