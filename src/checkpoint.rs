//! safetensors checkpoints: one file per model.
//!
//! Tensors are named by the model's schema ([`ModelConfig::param_specs`]): f32, and I64 for
//! integer buffers. `__metadata__` holds `model` (the kind), `n` and, for the one-hidden-layer
//! models, `hidden`, which suffice to rebuild FVSBN, MLP and NADE; `config`, the whole model
//! config as JSON, which suffices for every model; and whatever the writer adds (the run's
//! TOML as `run_config`, epoch, valid NLL). A training run's `last.safetensors` also carries the
//! optimizer's moments as `optim.*` tensors, which loaders of the model ignore. Files are
//! written to a temporary name and renamed, so a crash never leaves a half-written checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::io::write_atomically;
use crate::models::{self, Autoregressive, ModelConfig, ParamRole, ParamSpec, RunChoices};
use crate::optim::STATE_PREFIX;

/// The metadata key of the model config (JSON).
pub const CONFIG_KEY: &str = "config";

/// The metadata key of the data set a file's model belongs to, where it has no run config
/// (a mixture).
pub const DATASET_KEY: &str = "dataset";

/// A model read back from disk, with all the metadata the file carried.
pub struct Loaded {
    pub model: Box<dyn Autoregressive>,
    pub metadata: BTreeMap<String, String>,
    /// The `optim.*` tensors of a training checkpoint (empty for a plain model file).
    pub optimizer_state: HashMap<String, Tensor>,
    /// Every tensor of the file as stored, in file order (the model is f32 whatever the file's
    /// dtypes): what `nade info` lists.
    pub stored: Vec<StoredTensor>,
}

impl Loaded {
    /// The data set its training run read (`[data] dataset` of the run's config in the
    /// metadata), where the file says: the data a bare `nade eval` of it means. None for a
    /// file without a run config, or one that trained on the default data set implicitly.
    pub fn trained_dataset(&self) -> Option<String> {
        // A mixture (`nade mix`) names the data its weights were fit on.
        if let Some(dataset) = self.metadata.get(DATASET_KEY) {
            return Some(dataset.clone());
        }
        let run: toml::Table = self
            .metadata
            .get(crate::train_state::RUN_CONFIG)?
            .parse()
            .ok()?;
        run.get("data")?.get("dataset")?.as_str().map(str::to_owned)
    }
}

/// A tensor's name, dtype and shape as the file holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StoredTensor {
    pub name: String,
    /// The safetensors dtype: F32, I64, ...
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// Writes `model` to `path` atomically. `extra` metadata is stored beside the model's own.
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
    let mut metadata = extra.clone();
    metadata.extend(model_metadata(model.config())?);
    let mut tensors = Vec::new();
    for (name, tensor) in model
        .named_tensors()
        .into_iter()
        .chain(state.iter().cloned())
    {
        let host = tensor.to_device(&Device::Cpu)?.flatten_all()?;
        let (dtype, bytes): (&str, Vec<u8>) = match host.dtype() {
            DType::I64 | DType::U32 | DType::U8 => (
                "I64",
                host.to_dtype(DType::I64)?
                    .to_vec1::<i64>()?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            _ => (
                "F32",
                host.to_dtype(DType::F32)?
                    .to_vec1::<f32>()?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
        };
        tensors.push(EncodedTensor {
            name,
            dtype,
            shape: tensor.dims().to_vec(),
            bytes,
        });
    }
    write_atomically(path, &encode(&tensors, &metadata)?)
}

/// `model`, `n`, `hidden` (where the model has one) and `config` (JSON).
fn model_metadata(cfg: &ModelConfig) -> Result<BTreeMap<String, String>> {
    let mut metadata = BTreeMap::from([
        ("model".to_string(), cfg.kind().to_string()),
        ("n".to_string(), cfg.n().to_string()),
        (
            CONFIG_KEY.to_string(),
            serde_json::to_string(&cfg.structure())?,
        ),
    ]);
    if let Some(hidden) = cfg.hidden() {
        metadata.insert("hidden".into(), hidden.to_string());
    }
    for (key, value) in cfg.extra_metadata() {
        metadata.insert(key.into(), value);
    }
    Ok(metadata)
}

struct EncodedTensor {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// The safetensors bytes: an 8-byte little-endian header length, a JSON header (padded with
/// spaces to a multiple of 8), then the data. Written here rather than by
/// `safetensors::serialize` because that one emits `__metadata__` in HashMap order, and
/// identical runs must give byte-identical files. The safetensors crate reads it back.
fn encode(tensors: &[EncodedTensor], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    let mut offset = 0usize;
    for t in tensors {
        let info = serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, offset + t.bytes.len()]});
        header.insert(t.name.clone(), info);
        offset += t.bytes.len();
    }
    let mut json = serde_json::to_vec(&header)?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for t in tensors {
        out.extend_from_slice(&t.bytes);
    }
    Ok(out)
}

/// Reads a checkpoint, checks it against the schema and rebuilds the model on `device`.
/// `kernel` chooses how the model computes (NADE: auto, fused, blocked[:K], plain); it is not
/// part of the file, and None means auto.
pub fn load(path: &Path, device: &Device, kernel: Option<&str>) -> Result<Loaded> {
    let choices = RunChoices {
        kernel: kernel.map(str::to_owned),
        ..RunChoices::default()
    };
    load_with(path, device, &choices)
}

/// [`load`] with every run-time choice: the kernel, and the masks or orderings a mixture is
/// evaluated with (`--masks`, `--orders`).
pub fn load_with(path: &Path, device: &Device, choices: &RunChoices) -> Result<Loaded> {
    let bytes =
        fs::read(path).with_context(|| format!("{}: cannot read checkpoint", path.display()))?;
    let origin = path.display().to_string();
    let (metadata, tensors) = parse(&bytes, &origin)?;
    let stored = tensors
        .iter()
        .map(|(name, dtype, shape, _)| StoredTensor {
            name: name.clone(),
            dtype: format!("{dtype:?}"),
            shape: shape.clone(),
        })
        .collect();
    let shapes = tensors
        .iter()
        .map(|(name, _, shape, _)| (name.clone(), shape.clone()))
        .collect();
    let cfg = config_from_metadata(&metadata, &shapes, &origin)?.with_choices(choices)?;
    let (model_tensors, state_tensors): (RawTensors, RawTensors) = tensors
        .into_iter()
        .partition(|(name, ..)| !name.starts_with(STATE_PREFIX));
    let params = check_against_schema(&cfg, &model_tensors, &origin, device)?;
    let model = models::build_frozen(&cfg, params, device)
        .with_context(|| format!("{origin}: cannot build the {} model", cfg.kind()))?;
    let mut optimizer_state = HashMap::new();
    for (name, dtype, shape, data) in state_tensors {
        let tensor = float_tensor(&name, dtype, &shape, &data, &origin)?.to_device(device)?;
        optimizer_state.insert(name, tensor);
    }
    Ok(Loaded {
        model,
        metadata,
        optimizer_state,
        stored,
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
    // In file order (the header's map has none of its own).
    let tensors = header
        .offset_keys()
        .into_iter()
        .map(|name| {
            let view = file
                .tensor(&name)
                .with_context(|| format!("{origin}: tensor `{name}`"))?;
            Ok((
                name,
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            ))
        })
        .collect::<Result<_>>()?;
    Ok((metadata, tensors))
}

/// The model config of a checkpoint: its `config` JSON when it has one, else `model`, `n`
/// and `hidden` (files of other tools, and of nade before configs were stored, whose
/// `config` holds the run's TOML), completed from the tensors' `shapes` where the model
/// needs it (MADE: its layers, masks and direct connection, with `activation`).
pub fn config_from_metadata(
    metadata: &BTreeMap<String, String>,
    shapes: &BTreeMap<String, Vec<usize>>,
    origin: &str,
) -> Result<ModelConfig> {
    let get = |key: &str| {
        metadata.get(key).ok_or_else(|| {
            anyhow!(
                "{origin}: __metadata__ has no `{key}` (model, n and hidden describe the model)"
            )
        })
    };
    let kind = get("model")?;
    let positive = |key: &str| -> Result<usize> {
        let raw = get(key)?;
        match raw.trim().parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => bail!("{origin}: __metadata__ `{key}` = {raw:?} is not a positive integer"),
        }
    };
    let stored = metadata
        .get(CONFIG_KEY)
        .filter(|raw| raw.trim_start().starts_with('{'));
    let cfg = match stored {
        Some(raw) => {
            let cfg: ModelConfig = serde_json::from_str(raw)
                .with_context(|| format!("{origin}: __metadata__ `{CONFIG_KEY}`"))?;
            if cfg.kind() != kind {
                bail!(
                    "{origin}: __metadata__ says `model` = {kind:?} but its `{CONFIG_KEY}` describes a {}",
                    cfg.kind()
                );
            }
            cfg
        }
        None => {
            let n = positive("n")?;
            let needs_hidden = ModelConfig::from_legacy(kind, n, Some(1))
                .with_context(|| format!("{origin}: __metadata__ `model`"))?
                .hidden()
                .is_some();
            let hidden = if needs_hidden {
                Some(positive("hidden")?)
            } else {
                None
            };
            let mut cfg = ModelConfig::from_legacy(kind, n, hidden)
                .with_context(|| format!("{origin}: __metadata__"))?;
            cfg.complete_from_file(metadata, shapes)
                .with_context(|| origin.to_string())?;
            cfg
        }
    };
    if cfg.n() == 0 {
        bail!("{origin}: the model config has n = 0");
    }
    cfg.validate().with_context(|| origin.to_string())?;
    Ok(cfg)
}

/// Every schema tensor present with the right shape, nothing else; float data becomes f32,
/// integer buffers I64.
fn check_against_schema(
    cfg: &ModelConfig,
    tensors: &RawTensors,
    origin: &str,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let specs = cfg.param_specs();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let describe = || format!("a {} checkpoint holds {}", cfg.kind(), names.join(", "));
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
            .find(|(name, ..)| *name == spec.name)
            .ok_or_else(|| anyhow!("{origin}: missing tensor `{}` ({})", spec.name, describe()))?;
        if *shape != spec.shape {
            bail!(
                "{origin}: tensor `{}` has shape {shape:?}, expected {:?} for {}",
                spec.name,
                spec.shape,
                cfg.describe()
            );
        }
        let tensor = match spec.role {
            ParamRole::Buffer => integer_tensor(spec, *dtype, shape, data, origin)?,
            _ => finite(
                spec,
                float_tensor(&spec.name, *dtype, shape, data, origin)?,
                origin,
            )?,
        };
        out.insert(spec.name.clone(), tensor.to_device(device)?);
    }
    Ok(out)
}

/// `tensor`, or an error naming the first value that is not finite.
fn finite(spec: &ParamSpec, tensor: Tensor, origin: &str) -> Result<Tensor> {
    let values = tensor.flatten_all()?.to_vec1::<f32>()?;
    if let Some(at) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "{origin}: tensor `{}` holds {} at flat index {at}",
            spec.name,
            values[at]
        );
    }
    Ok(tensor)
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

/// An I64 host tensor from the raw bytes of an integer buffer (I64, I32 or U8).
fn integer_tensor(
    spec: &ParamSpec,
    dtype: Dtype,
    shape: &[usize],
    data: &[u8],
    origin: &str,
) -> Result<Tensor> {
    let values: Vec<i64> = match dtype {
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
            .collect(),
        Dtype::U8 => data.iter().map(|&b| b as i64).collect(),
        other => bail!(
            "{origin}: tensor `{}` has dtype {other:?}, expected an integer type (I64)",
            spec.name
        ),
    };
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}
