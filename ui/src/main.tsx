import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { keySession } from "./lib/auth";
import "./styles.css";

// A login URL's `#key=` leaves the address bar before anything renders; the key prompt offers it, and
// signs in with it only when the user says so.
keySession.adoptFromLocation(window.location, window.history);

const root = document.getElementById("root");
if (!root) throw new Error("index.html has no #root element");
createRoot(root).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
