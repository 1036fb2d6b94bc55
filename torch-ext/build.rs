//! Compiles `src/ext.cpp` and `src/cuda_graph.cpp` against the headers of the libtorch tch links. Its CUDA half is
//! compiled when that libtorch has CUDA (its ATen/cuda headers) and the CUDA runtime headers
//! are found (CUDA_HOME, /usr/local/cuda, or the nvidia wheels beside a pip torch); otherwise
//! the shim answers "not built with CUDA", so CPU-only machines still build.
//!
//! `src/c10d.cpp` (libtorch's c10d: TCPStore, ProcessGroupGloo, ProcessGroupNCCL) is compiled
//! apart, with Gloo when gloo's headers are found (Debian's `libgloo-dev`; `GLOO_INCLUDE`
//! names another directory) and NCCL when the CUDA half is built and `nccl.h` is found (the
//! nvidia-nccl wheel beside a pip torch, or `NCCL_INCLUDE`). Without either it answers "not
//! built with" that backend.
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=src/ext.cpp");
    println!("cargo:rerun-if-changed=src/cuda_graph.cpp");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=src/c10d.cpp");
    println!("cargo:rerun-if-changed=src/shim_error.h");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=NCCL_INCLUDE");
    // This crate's own test binary links libtorch too.
    crpo_torch_link::link_libtorch();
    let lib_dir = crpo_torch_link::lib_dir_or_panic();
    let root = lib_dir
        .parent()
        .expect("libtorch's lib dir has a parent")
        .to_path_buf();
    let include = root.join("include");
    let mut build = torch_build(&include);
    let mut c10d = torch_build(&include);
    build.file("src/ext.cpp").file("src/cuda_graph.cpp");
    c10d.file("src/c10d.cpp");
    let cuda = include.join("ATen/cuda/CUDAContext.h").exists() && lib_dir.join("libc10_cuda.so").exists();
    let cuda_include = cuda.then(|| cuda_runtime_include(&root)).flatten();
    match &cuda_include {
        Some(cuda_include) => {
            build.include(cuda_include).define("CRPO_TORCH_EXT_CUDA", None);
            println!("cargo:rustc-link-search=native={}", lib_dir.display());
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
            // at::cuda::CUDAGraph.
            println!("cargo:rustc-link-lib=dylib=torch_cuda");
        }
        None => println!(
            "cargo:warning=crpo-torch-ext: no CUDA headers beside libtorch; CUDA memory statistics are off"
        ),
    }
    match gloo_include() {
        Some(gloo) => {
            c10d.include(gloo).define("USE_C10D_GLOO", None).define("CRPO_C10D_GLOO", None);
        }
        None => println!(
            "cargo:warning=crpo-torch-ext: no gloo headers (apt install libgloo-dev); distributed training on CPU is off"
        ),
    }
    let nccl = nccl_include(&root).zip(cccl_include(&root));
    if let Some((cuda_include, (nccl, cccl))) = cuda_include.as_ref().zip(nccl) {
        // CCCL first: the CUDA runtime headers' own copies of cuda_fp16.h include <nv/target>.
        c10d.include(cccl)
            .include(cuda_include)
            .include(nccl)
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .define("CRPO_C10D_NCCL", None);
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
    build.compile("crpo_torch_ext");
    c10d.compile("crpo_c10d");
}

/// A C++17 build against libtorch's headers, with its ABI.
fn torch_build(include: &Path) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .include(include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!(
            "-D_GLIBCXX_USE_CXX11_ABI={}",
            env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned())
        ))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false);
    build
}

/// gloo's headers: `GLOO_INCLUDE`, or the system's (libgloo-dev).
fn gloo_include() -> Option<PathBuf> {
    env::var_os("GLOO_INCLUDE")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/include"), PathBuf::from("/usr/local/include")])
        .find(|dir| dir.join("gloo/config.h").exists())
}

/// `nccl.h`: `NCCL_INCLUDE`, or the nvidia-nccl wheel beside a pip torch.
fn nccl_include(torch_root: &Path) -> Option<PathBuf> {
    env::var_os("NCCL_INCLUDE")
        .map(PathBuf::from)
        .into_iter()
        .chain(torch_root.parent().map(|site| site.join("nvidia/nccl/include")))
        .chain([PathBuf::from("/usr/include")])
        .find(|dir| dir.join("nccl.h").exists())
}

/// CCCL's headers (`nv/target`, which the CUDA half-precision headers include): CUDA_HOME's,
/// or the nvidia-cuda-cccl wheel's beside a pip torch.
fn cccl_include(torch_root: &Path) -> Option<PathBuf> {
    cuda_include_candidates(torch_root)
        .into_iter()
        .find(|dir| dir.join("nv/target").exists())
}

/// A directory holding the CUDA runtime headers in full (`cuda_runtime_api.h` and the
/// `crt/` headers it includes: the nvidia-cuda-runtime wheel lacks those, triton's copy of
/// the same CUDA release has them).
fn cuda_runtime_include(torch_root: &Path) -> Option<PathBuf> {
    cuda_include_candidates(torch_root)
        .into_iter()
        .find(|dir| dir.join("cuda_runtime_api.h").exists() && dir.join("crt/host_config.h").exists())
}

/// Where CUDA's headers may be, in order: CUDA_HOME, /usr/local/cuda, and beside a pip torch
/// site-packages/triton/backends/nvidia/include and site-packages/nvidia/*/include.
fn cuda_include_candidates(torch_root: &Path) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = env::var_os("CUDA_HOME")
        .map(|home| PathBuf::from(home).join("include"))
        .into_iter()
        .collect();
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    if let Some(site_packages) = torch_root.parent() {
        candidates.push(site_packages.join("triton/backends/nvidia/include"));
        if let Ok(entries) = std::fs::read_dir(site_packages.join("nvidia")) {
            let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("include")).collect();
            dirs.sort();
            candidates.extend(dirs);
        }
    }
    candidates
}
