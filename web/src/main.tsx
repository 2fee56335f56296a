import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { ErrorBoundary } from "./components/ErrorBoundary";
import { createApi } from "./api/client";
import "./styles.css";

const api = createApi();

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <ErrorBoundary what="the app">
      <App api={api} />
    </ErrorBoundary>
  </StrictMode>,
);
