//! The runtime binary, tests and benches link libtorch with an rpath and torch_cuda; the
//! `crpo-host` launcher links nothing of it, so it can start, check that libtorch loads and
//! say what is wrong when it does not. The launcher gets the lib dir it will check.
fn main() {
    crpo_torch_link::link_libtorch_for_bins(&["crpo-host-runtime"]);
    let lib_dir = crpo_torch_link::lib_dir_or_panic();
    println!("cargo:rustc-env=CRPO_TORCH_LIB_DIR={}", lib_dir.display());
}
