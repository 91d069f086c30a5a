//! Natively, waiting for the GPU means a thread blocks in `Device::poll`. Async callers (the
//! engine's steps, and a server's tasks sharing an engine) hand that wait to one thread per
//! device and await its answer, so that their own thread is free meanwhile. In a browser the
//! event loop drives the GPU and nothing here exists.

use std::sync::mpsc;
use std::sync::OnceLock;

use futures_channel::oneshot;

/// Where the poll's outcome goes.
type Reply = oneshot::Sender<Result<(), String>>;

/// The device's waiting thread, started on first use; the `Gpu`'s drop ends it and waits for it,
/// so that its handle on the device is gone before the device is (a thread still polling while
/// the process tears the driver down corrupts the heap).
#[derive(Default)]
pub(super) struct Poller {
    /// `None` if the thread could not be started: callers then wait themselves.
    requests: OnceLock<Option<(mpsc::Sender<Reply>, std::thread::JoinHandle<()>)>>,
}

impl Drop for Poller {
    fn drop(&mut self) {
        if let Some(Some((requests, thread))) = self.requests.take() {
            drop(requests);
            let _ = thread.join();
        }
    }
}

impl Poller {
    /// Asks the thread to wait until `device` has finished all submitted work; the answer comes
    /// when it has. `None` if there is no such thread.
    pub fn wait(&self, device: &wgpu::Device) -> Option<oneshot::Receiver<Result<(), String>>> {
        let requests = self.requests.get_or_init(|| {
            let (sender, receiver) = mpsc::channel::<Reply>();
            let device = device.clone();
            let thread = std::thread::Builder::new().name("rwkv-wgpu poller".into()).spawn(move || {
                for reply in receiver {
                    let polled = device.poll(wgpu::PollType::wait_indefinitely());
                    let _ = reply.send(polled.map(drop).map_err(|e| e.to_string()));
                }
            });
            thread.ok().map(|thread| (sender, thread))
        });
        let (reply, answer) = oneshot::channel();
        requests.as_ref()?.0.send(reply).ok()?;
        Some(answer)
    }
}
