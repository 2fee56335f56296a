/** What a tab's content lets the workspace do with it. */
export interface TabHandle {
  /** End what runs in the tab (a terminal's shell) before it closes. */
  terminate?: () => void;
  /** false: the user chose to keep the tab (unsaved edits). */
  confirmClose?: () => boolean;
  focus?: () => void;
}
