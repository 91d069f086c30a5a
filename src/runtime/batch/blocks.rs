//! A batch's steps of several decode steps in one submit, and leaving inside one.

use super::{Batch, BatchEvent, Left, Request};
use crate::error::{Error, Result};
use crate::kernels::{Choice, MAX_SEQUENCES};
use crate::runtime::engine::BlockSequence;
use crate::runtime::MAX_BLOCK;

impl Batch {
    /// How many decode steps the next step can run in one submit: `None` unless every request
    /// generates (no prompt left to read) without a grammar or log-probabilities, the embedding
    /// table is on the GPU, and at least two steps fit every request's `max_tokens`.
    pub(super) fn block_steps(&self) -> Option<usize> {
        let generating = |r: &Request| {
            r.generated > 0
                && r.input.len() - r.read == 1
                && r.constraint.is_none()
                && r.options.sampler.logprobs.is_none()
        };
        let fits = self.requests.len() <= self.engine.max_rows().min(MAX_SEQUENCES);
        if !self.engine.decodes_in_blocks() || !fits || !self.requests.iter().all(generating) {
            return None;
        }
        let room = self.requests.iter().map(|r| r.options.max_tokens.saturating_sub(r.generated)).min()?;
        let steps = self.steps_per_submit.min(MAX_BLOCK).min(room);
        (steps > 1).then_some(steps)
    }

    /// Runs `steps` decode steps of every request in one submit. A request that ends inside the
    /// block (its stop token, `max_tokens`) gets the state after exactly its returned tokens.
    pub(super) async fn step_block(&mut self, steps: usize) -> Result<Vec<BatchEvent>> {
        let engine = self.engine.clone();
        for request in &mut self.requests {
            if request.snapshot.is_none() {
                request.snapshot = Some(engine.snapshot()?);
            }
            request.snapshot_fed = Some(request.fed.len());
        }
        let choices: Vec<Vec<Choice>> =
            self.requests.iter_mut().map(|r| (0..steps).map(|_| r.sampler.choice()).collect()).collect();
        let sequences: Vec<BlockSequence> = self
            .requests
            .iter()
            .zip(&choices)
            .map(|(r, choices)| BlockSequence {
                slot: r.session.slot(),
                first: r.input[r.read],
                choices,
                snapshot: r.snapshot.as_ref().expect("made above"),
            })
            .collect();
        let chosen = engine.decode_blocks(&sequences).await?;

        let mut events = Vec::new();
        let mut finished = Vec::new();
        for (request, tokens) in self.requests.iter_mut().zip(chosen) {
            let first = request.input[request.read];
            request.fed.push(first);
            request.read = request.input.len();
            for (j, &token) in tokens.iter().enumerate() {
                request.sampler.count(token);
                request.generated += 1;
                events.push(BatchEvent::Token { request: request.id, token, logprobs: None });
                if let Some(finish) = request.finish_after(token, false) {
                    events.push(BatchEvent::Finished { request: request.id, finish });
                    finished.push(request.id);
                    // The block read past this token: back to the state before it.
                    if j + 1 < tokens.len() {
                        let keep = request.fed.len();
                        rewind(request, keep).await?;
                    }
                    break;
                }
                if j + 1 < tokens.len() {
                    request.fed.push(token);
                } else {
                    request.input = vec![token];
                    request.read = 0;
                }
            }
        }
        self.retire(&finished);
        Ok(events)
    }

    /// Takes a request out of the batch after its first `generated` generated tokens (a stop
    /// string ended it there, say): its state holds its prompt and those tokens but the last,
    /// as if it had stopped there, also where the last step was a block that read further, and
    /// also if that step finished the request ([`Batch::take_finished`] not called yet). A
    /// request that cannot go back that far leaves anyway, with the error.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn remove_after(&mut self, request: u64, generated: usize) -> Result<Option<Left>> {
        pollster::block_on(self.remove_after_async(request, generated))
    }

    /// [`Batch::remove_after`] without blocking.
    pub async fn remove_after_async(&mut self, request: u64, generated: usize) -> Result<Option<Left>> {
        let entry = match self.requests.iter().position(|r| r.id == request) {
            Some(at) => self.requests.remove(at),
            None => match self.finished.iter().position(|r| r.id == request) {
                Some(at) => self.finished.remove(at),
                None => return Ok(None),
            },
        };
        let mut entry = entry;
        if generated > entry.generated {
            return Err(Error::InvalidArgument(format!(
                "request {request} generated {} tokens, not {generated}",
                entry.generated
            )));
        }
        // The newest token was sampled, never read: the state is one token behind `generated`.
        let read_past = entry.generated - generated;
        if read_past > 0 {
            let keep = entry.fed.len().checked_sub(read_past).ok_or_else(|| {
                Error::InvalidArgument(format!("request {request} cannot go back {read_past} tokens"))
            })?;
            rewind(&mut entry, keep).await?;
        }
        Ok(Some(entry.leave()))
    }
}

/// Puts `request`'s state back to the snapshot of its last block and reads `fed[..keep]` from
/// there again: the state after exactly the first `keep` tokens it was fed.
async fn rewind(request: &mut Request, keep: usize) -> Result<()> {
    let (Some(snapshot), Some(start)) = (&request.snapshot, request.snapshot_fed) else {
        return Err(Error::InvalidArgument(format!(
            "request {} cannot go back: its last step was not a block",
            request.id
        )));
    };
    if keep < start || keep > request.fed.len() {
        return Err(Error::InvalidArgument(format!(
            "request {} cannot go back past its last block",
            request.id
        )));
    }
    let slot = request.session.slot();
    request.session.engine().rewind(slot, snapshot, &request.fed[start..keep]).await?;
    request.fed.truncate(keep);
    Ok(())
}
