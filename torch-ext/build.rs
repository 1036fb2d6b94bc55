//! Compiles `src/ext.cpp` against the headers of the libtorch tch links. Its CUDA half is
//! compiled when that libtorch has CUDA (its ATen/cuda headers) and the CUDA runtime headers
//! are found (CUDA_HOME, /usr/local/cuda, or the nvidia wheels beside a pip torch); otherwise
//! the shim answers "not built with CUDA", so CPU-only machines still build.
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src/ext.cpp");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    // This crate's own test binary links libtorch too.
    crpo_torch_link::link_libtorch();
    let lib_dir = crpo_torch_link::lib_dir_or_panic();
    let root = lib_dir
        .parent()
        .expect("libtorch's lib dir has a parent")
        .to_path_buf();
    let include = root.join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("src/ext.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!(
            "-D_GLIBCXX_USE_CXX11_ABI={}",
            env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned())
        ))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false);
    let cuda = include.join("ATen/cuda/CUDAContext.h").exists() && lib_dir.join("libc10_cuda.so").exists();
    match cuda.then(|| cuda_runtime_include(&root)).flatten() {
        Some(cuda_include) => {
            build.include(cuda_include).define("CRPO_TORCH_EXT_CUDA", None);
            println!("cargo:rustc-link-search=native={}", lib_dir.display());
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
        }
        None => println!(
            "cargo:warning=crpo-torch-ext: no CUDA headers beside libtorch; CUDA memory statistics are off"
        ),
    }
    build.compile("crpo_torch_ext");
}

/// A directory holding the CUDA runtime headers in full (`cuda_runtime_api.h` and the
/// `crt/` headers it includes: the nvidia-cuda-runtime wheel lacks those, triton's copy of
/// the same CUDA release has them).
fn cuda_runtime_include(torch_root: &Path) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = env::var_os("CUDA_HOME")
        .map(|home| PathBuf::from(home).join("include"))
        .into_iter()
        .collect();
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    // pip's torch: site-packages/nvidia/{cu13,cuda_runtime}/include and
    // site-packages/triton/backends/nvidia/include beside site-packages/torch.
    if let Some(site_packages) = torch_root.parent() {
        candidates.push(site_packages.join("triton/backends/nvidia/include"));
        if let Ok(entries) = std::fs::read_dir(site_packages.join("nvidia")) {
            let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("include")).collect();
            dirs.sort();
            candidates.extend(dirs);
        }
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("cuda_runtime_api.h").exists() && dir.join("crt/host_config.h").exists())
}
