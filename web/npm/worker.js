// The engine's dedicated worker: the model loads, converts and generates here, so the page's
// thread only draws. index.js starts it (`new Worker(..., { type: "module" })`) and talks to it.
import { serve } from "./core.js";

const handle = serve((message, transfer = []) => self.postMessage(message, transfer));
self.onmessage = (event) => handle(event.data);
