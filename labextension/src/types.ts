// Typed answers of the REST API (/mlops/api/v1/...), shared by the sidebar views and the
// dashboard. They mirror mlops_jupyter/store/api_queries.py and api_table.py.

export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

export interface Experiment {
  name: string;
  runs: number;
  running: number;
  last_start: number | null;
}

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

export interface MetricInfo extends MetricSummary {
  key: string;
  count: number;
  last_step: number | null;
}

export interface RunEvent {
  kind: string;
  level: string;
  message: string;
  start_time: number;
  end_time: number | null;
  data: Json;
}

export interface CellRecord {
  source?: string;
  code?: string;
  status?: string;
  error?: string;
  execution_count?: number;
  seq?: number;
}

export interface DataVersion {
  role?: string;
  name?: string;
  source?: string;
  n_rows?: number;
  n_cols?: number;
  id?: string;
  fingerprint?: string;
}

export interface ArtifactInfo {
  name: string;
  digest: string;
  size: number;
  created: number;
}

export interface RunDetail {
  id: string;
  name: string;
  experiment: string;
  status: string;
  start_time: number;
  end_time: number | null;
  duration_s: number;
  parent_id: string | null;
  attempt: number;
  host: string | null;
  params: Record<string, Json>;
  tags: Record<string, Json>;
  metrics: MetricInfo[];
  artifacts: ArtifactInfo[];
  events: RunEvent[];
  alerts: RunEvent[];
  cells: CellRecord[];
  data_versions: DataVersion[];
  notebook_path: string | null;
  notebook_relpath: string | null;
}

export interface Series {
  key: string;
  n: number;
  decimated: boolean;
  last_step: number | null;
  step: number[];
  ts: number[];
  value: (number | null)[];
}

export interface Curve extends Series {
  run_id: string;
  name: string;
}

export interface CompareRun {
  id: string;
  name: string;
  experiment: string;
  status: string;
  duration_s: number;
  params: Record<string, Json>;
  metrics: Record<string, MetricInfo>;
}

export interface Compare {
  runs: CompareRun[];
  param_keys: string[];
  params_differ: string[];
  metric_keys: string[];
  curves: Record<string, Curve[]>;
}

export interface Sample {
  value: number | null;
  ts: number | null;
  min: number | null;
  max: number | null;
}

export interface Telemetry {
  run_id: string;
  name: string;
  status: string;
  samples: Record<string, Sample>;
  thermal: RunEvent[];
  throttling: boolean;
}

export interface AlertRow extends RunEvent {
  run_id: string;
  run_name: string;
}

export interface DriftColumn {
  column: string;
  drifted: boolean;
}

export interface DriftReport {
  created: number;
  reference?: { name?: string; id?: string };
  current?: { name?: string; id?: string };
  n_drifted?: number;
  n_columns?: number;
  dataset_drift: boolean;
  columns?: DriftColumn[];
}

/** GET /columns: what the runs of an experiment can show as table columns. */
export interface Columns {
  params: string[];
  metrics: string[];
  tags: string[];
  has_user: boolean;
  has_host: boolean;
}

export type Cell = Json;

/** GET /table: a row holds `fields` in order (the base fields, then the chosen columns). */
export interface TableAnswer {
  total: number;
  offset: number;
  limit: number;
  fields: string[];
  rows: Cell[][];
}

export interface GroupStat {
  mean: number | null;
  std: number | null;
  n: number;
}

export interface GroupRow {
  value: Json;
  n: number;
  metrics: Record<string, GroupStat>;
}

export type MediaKind = 'image' | 'figure' | 'table' | 'text' | 'audio';

export interface MediaItem {
  key: string;
  step: number;
  kind: MediaKind;
  mime: string;
  url: string;
}

/** GET /runs/{id}/media (served by the media module when it is installed). */
export interface MediaAnswer {
  media: MediaItem[];
}

export const BASE_FIELDS = ['id', 'name', 'experiment', 'status', 'start_time', 'duration_s', 'user', 'host'] as const;

/** One run's aggregate of an LLM evaluation score: mean and 95 % bootstrap interval. */
export interface LlmScoreValue {
  mean: number | null;
  ci_low: number | null;
  ci_high: number | null;
}

/** A score across the compared runs; `delta` and `regressed` are against the first run. */
export interface LlmScoreRow {
  metric: string;
  lower_is_better: boolean;
  descriptive: boolean;
  values: (LlmScoreValue | null)[];
  delta: (number | null)[];
  regressed: boolean[];
}

/** One example (input row) across the runs; lists are in the order of `runs`. */
export interface LlmExampleRow {
  row: number;
  question: string | null;
  answers: (string | null)[];
  scores: (number | null)[];
  errors: (string | null)[];
  delta: number | null;
}

/** GET /llm/compare?runs=A,B[,...]&metric=M&limit=N */
export interface LlmCompare {
  runs: { id: string; name: string }[];
  metric: string;
  lower_is_better: boolean;
  metrics_available: string[];
  scores: LlmScoreRow[];
  examples: { total: number; limit: number; rows: LlmExampleRow[] };
}
