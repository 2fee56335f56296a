import { Component, type ReactNode } from "react";

interface Props {
  /** What failed, for the message ("this tab", "the app"). */
  what: string;
  children: ReactNode;
}

/** Keeps one failing part (a chunk that no longer loads after an upgrade, a
 *  bug) from blanking the whole page: it shows what failed and a reload. */
export class ErrorBoundary extends Component<Props, { error: Error | null }> {
  override state = { error: null as Error | null };

  static getDerivedStateFromError(error: Error) {
    return { error };
  }

  override render() {
    if (!this.state.error) return this.props.children;
    return (
      <div className="state state-error" role="alert">
        <p>
          Something went wrong in {this.props.what}: {this.state.error.message}
        </p>
        <button type="button" className="btn btn-small" onClick={() => window.location.reload()}>
          Reload the page
        </button>
      </div>
    );
  }
}
