//! `--device cpu|cuda|metal|auto`.

use anyhow::{bail, Result};
use candle_core::Device;

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    Metal,
    /// CUDA if built with it and a GPU is present, else Metal likewise, else CPU.
    #[default]
    Auto,
}

pub fn select(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => {
            if !cfg!(feature = "cuda") {
                bail!("--device cuda: this binary was built without CUDA (rebuild with --features cuda)");
            }
            Ok(Device::new_cuda(0)?)
        }
        DeviceChoice::Metal => {
            if !cfg!(feature = "metal") {
                bail!("--device metal: this binary was built without Metal (rebuild with --features metal)");
            }
            Ok(Device::new_metal(0)?)
        }
        DeviceChoice::Auto => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(device) = Device::new_cuda(0) {
                    return Ok(device);
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(device) = Device::new_metal(0) {
                    return Ok(device);
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// A short name for messages and JSON.
pub fn name(device: &Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        Device::Cuda(_) => "cuda",
        Device::Metal(_) => "metal",
    }
}

/// Every device this build can run on here: CPU always, CUDA / Metal when compiled in and present.
/// Tests loop over it (candle's `test_device!` idea).
pub fn available() -> Vec<Device> {
    let mut devices = vec![Device::Cpu];
    if candle_core::utils::cuda_is_available() {
        if let Ok(device) = Device::new_cuda(0) {
            devices.push(device);
        }
    }
    if candle_core::utils::metal_is_available() {
        if let Ok(device) = Device::new_metal(0) {
            devices.push(device);
        }
    }
    devices
}
