//! Looking into an engine natively: every dispatch of a step timed, the steps recorded, and what
//! the steps so far have cost (benchmarks, and tests that hold the per-token overhead down).

use super::recording::Shape;
use super::{Counters, Engine, Logits, Runner, Work};
use crate::error::Result;
use crate::gpu::DispatchTime;

impl Engine {
    /// Runs `work` as one step with every dispatch timed on the GPU ([`Step::profile`]): the
    /// states advance as with [`Engine::step`]; nothing is read back.
    pub fn profile(&self, work: &[Work]) -> Result<Vec<DispatchTime>> {
        let shape = self.check(work)?;
        let gpu = self.gpu();
        let mut runner = self.runner_blocking();
        let recorded = runner.steps.get_or_record(shape, |id| self.record(shape, id))?;
        self.upload(recorded, work, shape)?;
        let mut times = recorded.body.profile(gpu)?;
        if let Some((head, _)) = &recorded.head {
            times.extend(head.profile(gpu)?);
        }
        if let (true, Some(sample)) = (work.iter().any(|item| item.sample.is_some()), &recorded.sample) {
            times.extend(sample.profile(gpu)?);
        }
        Ok(times)
    }

    /// The runner, waiting for a step in flight to finish.
    fn runner_blocking(&self) -> futures_util::lock::MutexGuard<'_, Runner> {
        pollster::block_on(self.inner.runner.lock())
    }

    /// How many recorded steps the engine keeps now (at most [`STEP_CACHE_CAPACITY`]).
    pub fn recorded_steps(&self) -> usize {
        self.runner_blocking().steps.len()
    }

    /// What the steps so far have cost.
    pub fn counters(&self) -> Counters {
        self.runner_blocking().counters
    }

    pub fn reset_counters(&self) {
        self.runner_blocking().counters = Counters::default();
    }

    /// Records the step for `rows` tokens of one sequence ahead of time, so that the first run
    /// does not pay for compiling pipelines; returns its number of dispatches.
    pub fn prepare(&self, rows: usize, logits: Logits) -> Result<usize> {
        let shape = Shape { rows, sequences: 1, logits };
        let mut runner = self.runner_blocking();
        let recorded = runner.steps.get_or_record(shape, |id| self.record(shape, id))?;
        Ok(recorded.body.len() + recorded.head.as_ref().map_or(0, |(head, _)| head.len()))
    }
}
