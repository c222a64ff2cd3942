import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { keySession } from "./lib/auth";
import "./styles.css";

// A login URL's `#key=` goes into this tab's session and out of the address bar before anything renders.
keySession.adoptFromLocation(window.location, window.history);

const root = document.getElementById("root");
if (!root) throw new Error("index.html has no #root element");
createRoot(root).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
