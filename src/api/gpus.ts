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
 * A kernel holding an allocated device. Other users' kernels come without
 * id, owner or environment.
 */
export interface IGpuHolder {
  kernel_id?: string | null;
  owner?: string | null;
  environment?: string | null;
  /**
   * `exclusive`, or `shared` with its per-device limit (`shared:2`).
   */
  sharing?: string;
}

/**
 * A device kernels may get (NVML's, or the admin's `gpu_devices`), with the
 * kernels that hold it (the allocator's picture, from the containers' labels).
 */
export interface IGpuAllocation {
  id: string;
  index?: number | null;
  uuid?: string | null;
  name?: string | null;
  mig?: boolean;
  holders: IGpuHolder[];
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
  allocation?: IGpuAllocation[];
  allocation_error?: string;
}
