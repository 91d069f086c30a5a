//! Running a loaded model: the engine (state slots and recorded steps), sessions, states as
//! values, and sampling.

mod batch;
mod engine;
mod generate;
mod sampler;
mod session;
mod state;
mod stops;
#[cfg(not(target_arch = "wasm32"))]
mod text_model;

pub use self::batch::{Batch, BatchEvent, Left, RequestOptions};
pub use self::engine::{
    BlockSequence, Counters, Engine, EngineOptions, Logits, Output, Snapshot, Work, MAX_BLOCK,
    STEP_CACHE_CAPACITY,
};
#[cfg(not(target_arch = "wasm32"))]
pub use self::generate::generate_stream;
pub use self::generate::{CancelToken, Finish, GenerateOptions, Generation, Piece};
pub use self::sampler::{Sampler, SamplerOptions};
pub use self::session::Session;
pub use self::state::{LayerValues, State};
pub use self::stops::StopScanner;
#[cfg(not(target_arch = "wasm32"))]
pub use self::text_model::{TextModel, TextModelOptions};
