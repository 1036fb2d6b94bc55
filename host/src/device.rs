//! Device and dtype selection from the CLI or config: `auto | cpu | cuda:N`, `auto | f32 | bf16`.

use anyhow::bail;
use tch::{Device, Kind};

pub fn parse_device(text: &str) -> anyhow::Result<Device> {
    Ok(match text {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(index) => Device::Cuda(index),
            None => bail!("device `{other}`: expected auto, cpu, cuda or cuda:N"),
        },
    })
    .and_then(|device| match device {
        Device::Cuda(index) if index >= tch::Cuda::device_count() as usize => {
            bail!(
                "device `{text}`: CUDA device {index} is not available ({} found; see `crpo-host doctor`)",
                tch::Cuda::device_count()
            )
        }
        device => Ok(device),
    })
}

/// `auto` is bf16 on CUDA (as the paper trains) and f32 on CPU.
pub fn parse_dtype(text: &str, device: Device) -> anyhow::Result<Kind> {
    Ok(match text {
        "auto" if device.is_cuda() => Kind::BFloat16,
        "auto" | "f32" | "float32" => Kind::Float,
        "bf16" | "bfloat16" => Kind::BFloat16,
        other => bail!("dtype `{other}`: expected auto, f32 or bf16"),
    })
}

/// A device as the config writes it: `cpu`, `cuda:0`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(index) => format!("cuda:{index}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        Device::Cpu => "cpu".into(),
    }
}

/// A dtype as the config writes it: `f32`, `bf16`.
pub fn dtype_name(kind: Kind) -> String {
    match kind {
        Kind::Float => "f32".into(),
        Kind::BFloat16 => "bf16".into(),
        Kind::Half => "f16".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices_and_dtypes() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("gpu")
            .unwrap_err()
            .to_string()
            .contains("expected auto, cpu"));
        if !tch::Cuda::is_available() {
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
            assert!(parse_device("cuda:0")
                .unwrap_err()
                .to_string()
                .contains("not available"));
        }
        assert_eq!(parse_dtype("auto", Device::Cpu).unwrap(), Kind::Float);
        assert_eq!(parse_dtype("auto", Device::Cuda(0)).unwrap(), Kind::BFloat16);
        assert!(parse_dtype("f8", Device::Cpu).is_err());
        assert_eq!(device_name(Device::Cuda(1)), "cuda:1");
        assert_eq!(device_name(Device::Cpu), "cpu");
        assert_eq!(dtype_name(Kind::BFloat16), "bf16");
    }
}
