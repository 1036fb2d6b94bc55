//! With the `tch` feature, records the torch version this build compiles against: a policy
//! plugin library carries it, and the host refuses a library built against another torch.
fn main() {
    #[cfg(feature = "tch")]
    {
        crpo_torch_link::export_torch_version();
        // For the sdk's own test binaries, which then link libtorch.
        crpo_torch_link::link_libtorch();
    }
}
