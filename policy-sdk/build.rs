//! Records the torch version this build compiles against (a policy plugin library carries it,
//! and the host refuses a library built against another torch), and links libtorch for this
//! crate's own test binaries.
fn main() {
    crpo_torch_link::export_torch_version();
    crpo_torch_link::link_libtorch();
}
