//! The trainable parameters of a model, created on first request with a
//! seeded initialisation.
//!
//! A candle [`VarBuilder`] asks its backend for each tensor by name with an
//! initialisation hint. [`ParameterStore`] answers like candle's `VarMap`
//! (a new [`Var`] the first time, the same one afterwards, which is how
//! tied weights share storage) but draws the initial values from
//! [`Rng::derive`]`(seed, name)`: a parameter's starting value depends only
//! on the seed and its name, not on the order modules were built in.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use crate::rng::Rng;

/// Named trainable parameters, shared between the model and the optimiser.
#[derive(Clone, Debug)]
pub struct ParameterStore {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
    seed: u64,
}

impl ParameterStore {
    /// An empty store whose parameters will be initialised from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            vars: Arc::new(Mutex::new(BTreeMap::new())),
            seed,
        }
    }

    /// A `VarBuilder` (f32, CPU) that creates parameters in this store.
    pub fn var_builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, device.clone())
    }

    /// Every parameter, sorted by name (the order the optimiser, the
    /// checkpoint and the gradient report all use).
    pub fn parameters(&self) -> Vec<(String, Var)> {
        self.lock()
            .iter()
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect()
    }

    /// The number of scalar parameters.
    pub fn scalar_count(&self) -> usize {
        self.lock().values().map(|var| var.elem_count()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Var>> {
        // A poisoned lock only means another thread panicked mid-insert of a
        // whole entry; the map itself is still consistent.
        self.vars
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Draws a tensor of `shape` following candle's `init` hint, from `rng`.
fn initial_values(shape: &Shape, init: Init, rng: &mut Rng) -> Vec<f32> {
    let count = shape.elem_count();
    let normal = |rng: &mut Rng, mean: f64, std: f64| -> Vec<f32> {
        (0..count)
            .map(|_| (mean + std * rng.normal()) as f32)
            .collect()
    };
    let uniform = |rng: &mut Rng, low: f64, high: f64| -> Vec<f32> {
        (0..count)
            .map(|_| (low + (high - low) * rng.next_f64()) as f32)
            .collect()
    };
    match init {
        Init::Const(value) => vec![value as f32; count],
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn => FanInOut::FanIn.for_shape(shape),
                FanInOut::FanOut => FanInOut::FanOut.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(rng, 0.0, std),
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
            }
        }
    }
}

impl SimpleBackend for ParameterStore {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut vars = self.lock();
        if let Some(var) = vars.get(name) {
            if var.shape() != &shape {
                candle_core::bail!(
                    "parameter `{name}` is requested with shape {shape:?} but already has {:?} (a tie between weights of different shapes?)",
                    var.shape()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let mut rng = Rng::derive(self.seed, name, 0);
        let values = initial_values(&shape, init, &mut rng);
        let tensor = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(
        &self,
        name: &str,
        _dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.lock().get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("parameter `{name}` does not exist yet and needs a shape"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_values_depend_on_seed_and_name_only() {
        let device = Device::Cpu;
        let first = ParameterStore::new(5);
        let vb = first.var_builder(&device);
        let a = vb
            .get_with_hints(
                (3, 4),
                "a",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap();
        let b = vb.get_with_hints((2,), "b", Init::Const(1.0)).unwrap();
        let second = ParameterStore::new(5);
        let vb2 = second.var_builder(&device);
        // Other order: same values.
        let b2 = vb2.get_with_hints((2,), "b", Init::Const(1.0)).unwrap();
        let a2 = vb2
            .get_with_hints(
                (3, 4),
                "a",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )
            .unwrap();
        assert_eq!(a.to_vec2::<f32>().unwrap(), a2.to_vec2::<f32>().unwrap());
        assert_eq!(b.to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
        assert_eq!(b2.to_vec1::<f32>().unwrap(), vec![1.0, 1.0]);
        // Asking again returns the same variable: ties share storage.
        let again = vb.get_with_hints((3, 4), "a", Init::Const(0.0)).unwrap();
        assert_eq!(again.to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap());
        assert_eq!(first.parameters().len(), 2);
        assert!(vb.get_with_hints((4, 3), "a", Init::Const(0.0)).is_err());
    }
}
