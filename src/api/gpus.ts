// Shapes of GET /tfenv/gpus.

/**
 * A process on a GPU (NVML), with the tfenv kernel it belongs to if any.
 */
export interface IGpuProcess {
  pid?: number;
  used_memory?: number | null;
  kernel_id?: string | null;
  container_id?: string | null;
  environment?: string | null;
}

/**
 * One host GPU (NVML).
 */
export interface IGpu {
  index: number;
  uuid?: string | null;
  name?: string | null;
  memory_used?: number | null;
  memory_total?: number | null;
  utilization_gpu?: number | null;
  utilization_memory?: number | null;
  temperature?: number | null;
  power_watts?: number | null;
  processes?: IGpuProcess[];
  error?: string;
}

/**
 * Reply of `GET /tfenv/gpus`.
 */
export interface IGpuOverview {
  state: 'ok' | 'no_nvml_library' | 'no_driver' | 'no_gpu' | 'error' | string;
  message: string;
  runtime?: {
    nvidia?: boolean;
    message?: string;
    default?: string;
    runtimes?: string[];
  } | null;
  driver_version?: string | null;
  cuda_driver_version?: string | null;
  gpus: IGpu[];
}
