//! safetensors checkpoints. Tensors are named after the formulas (NADE: W, c, V, b; FVSBN: W, b;
//! MLP: A, c, alpha, b), f32. `__metadata__` holds `model`, `n` and `hidden`, which suffice to
//! rebuild the model, plus whatever the writer adds (config, epoch, valid NLL). A training
//! run's `last.safetensors` also carries the optimizer's moments as `optim.*` tensors, which
//! loaders of the model ignore. Files are written to a temporary name and renamed, so a crash
//! never leaves a half-written checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use safetensors::{Dtype, SafeTensors};

use crate::models::{self, Autoregressive, ModelConfig, ModelKind, NadePath};
use crate::optim::STATE_PREFIX;

/// A model read back from disk, with all the metadata the file carried.
pub struct Loaded {
    pub model: Box<dyn Autoregressive>,
    pub metadata: BTreeMap<String, String>,
    /// The `optim.*` tensors of a training checkpoint (empty for a plain model file).
    pub optimizer_state: HashMap<String, Tensor>,
}

/// Writes `model` to `path` atomically. `extra` metadata is stored beside model / n / hidden.
pub fn save(
    path: &Path,
    model: &dyn Autoregressive,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    save_with_state(path, model, &[], extra)
}

/// [`save`] plus optimizer tensors, whose names must start with `optim.`.
pub fn save_with_state(
    path: &Path,
    model: &dyn Autoregressive,
    state: &[(String, Tensor)],
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let cfg = model.config();
    let mut metadata: HashMap<String, String> = extra.clone().into_iter().collect();
    metadata.insert("model".into(), cfg.kind.name().into());
    metadata.insert("n".into(), cfg.n.to_string());
    if cfg.kind.has_hidden() {
        metadata.insert("hidden".into(), cfg.hidden.to_string());
    }
    let named = model
        .named_tensors()
        .into_iter()
        .map(|(name, t)| (name.to_string(), t));
    let mut tensors = Vec::new();
    for (name, tensor) in named.chain(state.iter().cloned()) {
        let host = tensor
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .flatten_all()?;
        let bytes: Vec<u8> = host
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        tensors.push((name, tensor.dims().to_vec(), bytes));
    }
    let buffer = encode(&tensors, &metadata)?;
    write_atomically(path, &buffer)
}

/// The safetensors bytes of f32 tensors: an 8-byte little-endian header length, a JSON header
/// (padded with spaces to a multiple of 8), then the data. Written here rather than by
/// `safetensors::serialize` because that one emits `__metadata__` in HashMap order, and
/// identical runs must give byte-identical files. The safetensors crate reads it back.
fn encode(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    let sorted: BTreeMap<&String, &String> = metadata.iter().collect();
    header.insert("__metadata__".into(), serde_json::to_value(sorted)?);
    let mut offset = 0usize;
    for (name, shape, bytes) in tensors {
        let info = serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes.len()]});
        header.insert(name.clone(), info);
        offset += bytes.len();
    }
    let mut json = serde_json::to_vec(&header)?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, _, bytes) in tensors {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Writes the bytes to a sibling temporary file, syncs it and renames it over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("{}: cannot write", path.display()));
    }
    Ok(())
}

/// Reads a checkpoint, checks it against the schema and rebuilds the model on `device`.
/// `nade_path` chooses how NADE computes its logits (it is not part of the file).
pub fn load(path: &Path, device: &Device, nade_path: NadePath) -> Result<Loaded> {
    let bytes =
        fs::read(path).with_context(|| format!("{}: cannot read checkpoint", path.display()))?;
    let origin = path.display().to_string();
    let (metadata, tensors) = parse(&bytes, &origin)?;
    let mut cfg = config_from_metadata(&metadata, &origin)?;
    cfg.nade_path = nade_path;
    let (model_tensors, state_tensors): (RawTensors, RawTensors) = tensors
        .into_iter()
        .partition(|(name, ..)| !name.starts_with(STATE_PREFIX));
    let params = check_against_schema(&cfg, &model_tensors, &origin, device)?;
    let vb = VarBuilder::from_tensors(params, DType::F32, device);
    let model = models::build(&cfg, vb)
        .with_context(|| format!("{origin}: cannot build the {} model", cfg.kind))?;
    let mut optimizer_state = HashMap::new();
    for (name, dtype, shape, data) in state_tensors {
        let tensor = float_tensor(&name, dtype, &shape, &data, &origin)?.to_device(device)?;
        optimizer_state.insert(name, tensor);
    }
    Ok(Loaded {
        model,
        metadata,
        optimizer_state,
    })
}

type RawTensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn parse(bytes: &[u8], origin: &str) -> Result<(BTreeMap<String, String>, RawTensors)> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("{origin}: not a safetensors file ({e})"))?;
    let metadata: BTreeMap<String, String> = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{origin}: not a safetensors file ({e})"))?;
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            )
        })
        .collect();
    Ok((metadata, tensors))
}

fn config_from_metadata(metadata: &BTreeMap<String, String>, origin: &str) -> Result<ModelConfig> {
    let get = |key: &str| {
        metadata.get(key).ok_or_else(|| {
            anyhow!(
                "{origin}: __metadata__ has no `{key}` (model, n and hidden describe the model)"
            )
        })
    };
    let kind: ModelKind = get("model")?
        .parse()
        .map_err(|e| anyhow!("{origin}: __metadata__ `model`: {e}"))?;
    let positive = |key: &str| -> Result<usize> {
        let raw = get(key)?;
        match raw.trim().parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => bail!("{origin}: __metadata__ `{key}` = {raw:?} is not a positive integer"),
        }
    };
    let n = positive("n")?;
    let hidden = if kind.has_hidden() {
        positive("hidden")?
    } else {
        0
    };
    Ok(ModelConfig::new(kind, n, hidden))
}

/// Every schema tensor present with the right shape, nothing else; float data becomes f32.
fn check_against_schema(
    cfg: &ModelConfig,
    tensors: &RawTensors,
    origin: &str,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let specs = cfg.param_specs();
    let names: Vec<&str> = specs.iter().map(|s| s.name).collect();
    let describe = || format!("a {} checkpoint holds {}", cfg.kind, names.join(", "));
    if let Some((extra, ..)) = tensors
        .iter()
        .find(|(name, ..)| !names.contains(&name.as_str()))
    {
        bail!("{origin}: unexpected tensor `{extra}` ({})", describe());
    }
    let mut out = HashMap::new();
    for spec in &specs {
        let (_, dtype, shape, data) = tensors
            .iter()
            .find(|(name, ..)| name == spec.name)
            .ok_or_else(|| anyhow!("{origin}: missing tensor `{}` ({})", spec.name, describe()))?;
        if *shape != spec.shape {
            bail!(
                "{origin}: tensor `{}` has shape {shape:?}, expected {:?} for {} with n = {}, hidden = {}",
                spec.name,
                spec.shape,
                cfg.kind,
                cfg.n,
                cfg.hidden
            );
        }
        let tensor = float_tensor(spec.name, *dtype, shape, data, origin)?;
        let values = tensor.flatten_all()?.to_vec1::<f32>()?;
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "{origin}: tensor `{}` holds {} at flat index {at}",
                spec.name,
                values[at]
            );
        }
        out.insert(spec.name.to_string(), tensor.to_device(device)?);
    }
    Ok(out)
}

/// An f32 host tensor from the raw bytes of any float dtype.
fn float_tensor(
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
    origin: &str,
) -> Result<Tensor> {
    let dtype = match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        other => {
            bail!("{origin}: tensor `{name}` has dtype {other:?}, expected a float type (F32)")
        }
    };
    Ok(Tensor::from_raw_buffer(data, dtype, shape, &Device::Cpu)?.to_dtype(DType::F32)?)
}
