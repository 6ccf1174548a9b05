// Calls to the server extension's REST API (/mlops/api/v1/...). ServerConnection adds the
// token and XSRF header, so every route runs behind Jupyter's authentication.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export const PREFIX = 'mlops/api/v1';

export interface MetricSummary {
  last: number | null;
  min: number | null;
  max: number | null;
}

export interface RunRow {
  id: string;
  name: string;
  experiment: string;
  status: string;
  start_time: number;
  end_time: number | null;
  duration_s: number;
  attempt: number;
  parent_id: string | null;
  metric: MetricSummary | null;
}

export interface RunsPage {
  total: number;
  offset: number;
  limit: number;
  metric: string | null;
  runs: RunRow[];
}

export interface Curve {
  run_id: string;
  name: string;
  key: string;
  n: number;
  decimated: boolean;
  step: number[];
  value: (number | null)[];
}

export interface Compare {
  runs: {
    id: string;
    name: string;
    experiment: string;
    status: string;
    duration_s: number;
    params: Record<string, unknown>;
    metrics: Record<string, { count: number; last: number | null; min: number | null; max: number | null }>;
  }[];
  param_keys: string[];
  params_differ: string[];
  metric_keys: string[];
  curves: Record<string, Curve[]>;
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string
  ) {
    super(message);
  }
}

export async function api<T>(path: string, query: Record<string, string | string[] | undefined> = {}): Promise<T> {
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
  const url = URLExt.join(settings.baseUrl, PREFIX, path) + (qs ? `?${qs}` : '');
  const response = await ServerConnection.makeRequest(url, {}, settings);
  let body: any = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(response.status, (body && body.error) || response.statusText);
  }
  return body as T;
}
