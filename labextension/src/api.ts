// Calls to the server extension's REST API (/mlops/api/v1/...). ServerConnection adds the
// token and XSRF header, so every route runs behind Jupyter's authentication.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export * from './types';

export const PREFIX = 'mlops/api/v1';

export type Query = Record<string, string | string[] | undefined>;

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string
  ) {
    super(message);
  }
}

/** The full URL of a route with its query string. */
export function apiUrl(path: string, query: Query = {}): string {
  const settings = ServerConnection.makeSettings();
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v === undefined || v === '') {
      continue;
    }
    for (const item of Array.isArray(v) ? v : [v]) {
      params.append(k, item);
    }
  }
  const qs = params.toString();
  return URLExt.join(settings.baseUrl, PREFIX, path) + (qs ? `?${qs}` : '');
}

/** GET a route; the raw response (for text answers such as CSV). */
export async function apiRaw(path: string, query: Query = {}): Promise<Response> {
  const settings = ServerConnection.makeSettings();
  const response = await ServerConnection.makeRequest(apiUrl(path, query), {}, settings);
  if (!response.ok) {
    let msg = response.statusText;
    try {
      const body = (await response.json()) as { error?: string };
      msg = body.error ?? msg;
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, msg);
  }
  return response;
}

export async function api<T>(path: string, query: Query = {}): Promise<T> {
  const response = await apiRaw(path, query);
  return (await response.json()) as T;
}
