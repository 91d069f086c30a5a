//! Running a loaded model: sessions that own a recurrent state, and sampling.

mod sampler;
mod session;

pub use self::sampler::{Sampler, SamplerOptions};
pub use self::session::{Session, StateSnapshot};
