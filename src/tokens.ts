/**
 * The `metadata.tfenv` block of a `tfenv-<id>` kernelspec, as returned by the
 * server extension.
 */
export interface ITfEnvironment {
  /**
   * Environment id; the kernelspec is named `tfenv-<id>`.
   */
  id: string;
  /**
   * Docker image the kernel runs in.
   */
  image: string;
  /**
   * Pinned TensorFlow version of the image.
   */
  tensorflow: string;
  /**
   * GPU request for the container (e.g. `"all"`, a count, or none).
   */
  gpus: string | number | null;
  /**
   * Human readable name shown in the launcher.
   */
  display_name: string;
}

/**
 * Reply of `GET /tfenv/environments`.
 *
 * The server may answer with a bare list or wrap it in an object; both are
 * accepted by {@link normalizeEnvironments}.
 */
export type EnvironmentsReply =
  ITfEnvironment[] | { environments: ITfEnvironment[] };

/**
 * Extract the list of environments from a `GET /tfenv/environments` reply.
 */
export function normalizeEnvironments(
  reply: EnvironmentsReply | null | undefined
): ITfEnvironment[] {
  if (Array.isArray(reply)) {
    return reply;
  }
  if (reply && Array.isArray(reply.environments)) {
    return reply.environments;
  }
  return [];
}
