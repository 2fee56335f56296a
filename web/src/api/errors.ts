/** An error answered by the API (`{"error":{"code","message","details"?}}`)
 *  or a GraphQL error (`extensions.code`, `extensions.details`). */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The session is gone (refresh failed): the user must sign in again. */
export class SessionExpiredError extends ApiError {
  constructor(message = "Your session has ended; please sign in again.") {
    super(401, "session_expired", message);
    this.name = "SessionExpiredError";
  }
}

/** Reads the error shape from a failed response; never throws. */
export async function errorFromResponse(res: Response): Promise<ApiError> {
  let text = "";
  try {
    text = await res.text();
  } catch {
    /* body unreadable */
  }
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string; details?: unknown } };
    if (body && typeof body === "object" && body.error && typeof body.error === "object") {
      return new ApiError(
        res.status,
        body.error.code ?? "error",
        body.error.message ?? `${res.status} ${res.statusText}`,
        body.error.details,
      );
    }
  } catch {
    /* not JSON */
  }
  const message = text.trim() && text.length < 300 ? text.trim() : `Request failed: ${res.status} ${res.statusText}`;
  return new ApiError(res.status, httpCode(res.status), message);
}

function httpCode(status: number): string {
  if (status === 401) return "unauthorized";
  if (status === 403) return "forbidden";
  if (status === 404) return "not_found";
  if (status === 409) return "conflict";
  if (status === 412) return "precondition_failed";
  if (status >= 500) return "internal";
  return "error";
}

/** A message fit for a toast or an alert, whatever was thrown. */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) {
    if (e.name === "TypeError" && /fetch|network/i.test(e.message)) return "Network error: the server could not be reached.";
    return e.message || "Something went wrong.";
  }
  if (typeof e === "string") return e;
  return "Something went wrong.";
}
