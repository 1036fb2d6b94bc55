//! `crpo-host doctor`: what this installation runs on.

use crate::torch_info::{cuda_devices, loaded_libtorch_dir, torch_version};
use std::path::PathBuf;

pub fn run(plugin_dirs: &[PathBuf]) -> anyhow::Result<()> {
    println!("crpo-host        {}", env!("CARGO_PKG_VERSION"));
    println!("crpo-sdk (ABI)   {}", crpo_sdk::SDK_VERSION);

    // Any tensor op makes sure libtorch is initialised before we look at it.
    let _ = tch::Tensor::zeros([1], (tch::Kind::Float, tch::Device::Cpu));
    let lib_dir = loaded_libtorch_dir();
    let version = lib_dir.as_deref().and_then(torch_version);
    match (&lib_dir, &version) {
        (Some(dir), Some(v)) => println!("torch            {v} ({})", dir.display()),
        (Some(dir), None) => println!("torch            unknown version ({})", dir.display()),
        (None, _) => {
            anyhow::bail!("libtorch is linked but not mapped in this process: cannot tell which one runs")
        }
    }

    let cuda = tch::Cuda::is_available();
    println!("CUDA available   {}", yes_no(cuda));
    println!("CUDA devices     {}", tch::Cuda::device_count());
    match cuda_devices() {
        Ok(devices) => {
            for d in devices {
                println!(
                    "  cuda:{}  {}  {:.1} GiB",
                    d.index,
                    d.name,
                    d.total_memory_bytes as f64 / (1u64 << 30) as f64
                );
            }
        }
        Err(why) if cuda => println!("  (device details unavailable: {why})"),
        Err(_) => {}
    }
    let has_cuda_lib = lib_dir
        .as_ref()
        .is_some_and(|d| d.join("libtorch_cuda.so").exists());
    if has_cuda_lib && !cuda {
        println!("  (this libtorch has CUDA support; no usable GPU or driver was found)");
    }
    println!("cuDNN available  {}", yes_no(tch::Cuda::cudnn_is_available()));
    println!(
        "CPU threads      {} (torch uses {})",
        available_cores(),
        tch::get_num_threads()
    );
    println!(
        "plugin dirs      {}",
        if plugin_dirs.is_empty() {
            "(none)".to_string()
        } else {
            String::new()
        }
    );
    for dir in plugin_dirs {
        let state = if dir.is_dir() { "" } else { "  (missing)" };
        println!("  {}{state}", dir.display());
    }
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
