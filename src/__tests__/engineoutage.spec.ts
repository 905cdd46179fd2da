import { TfEnvApiError, type IEnvironment } from '../api';
import { EngineOutage } from '../engineoutage';

const MESSAGE =
  'Cannot reach the Docker engine at unix:///var/run/docker.sock: Connection refused. Start the Docker engine (`sudo systemctl start docker`, or Docker Desktop)…';
const away = new TfEnvApiError(MESSAGE, 503, 'DockerUnavailableError');

const listing = (present: boolean | null, error?: string): IEnvironment[] => [
  { id: 'py', image_status: { present, error } } as unknown as IEnvironment
];

describe('EngineOutage', () => {
  it('keeps the server’s message from its 503, until an answer of the engine', () => {
    const outage = new EngineOutage();
    outage.failed(away);
    expect(outage.current).toEqual({
      message: MESSAGE,
      since: expect.any(Number)
    });
    outage.answered();
    expect(outage.current).toBeNull();
  });

  it('takes only the engine’s 503 for an outage', () => {
    const outage = new EngineOutage();
    outage.failed(new TfEnvApiError('Failed to fetch', null));
    outage.failed(new TfEnvApiError('kubernetes unavailable', 503, 'X'));
    outage.failed(new TfEnvApiError('No kernel k1', 404, 'NotFoundError'));
    outage.failed(new Error(MESSAGE));
    expect(outage.current).toBeNull();
    // An older server without `reason`: its words say it.
    outage.failed(new TfEnvApiError(MESSAGE, 503));
    expect(outage.current?.message).toBe(MESSAGE);
  });

  it('reads the listing’s image presences', () => {
    const outage = new EngineOutage();
    outage.listed(listing(null, MESSAGE));
    expect(outage.current?.message).toBe(MESSAGE);
    // The engine answered, with a refusal of its own.
    outage.listed(listing(null, '500 Server Error: no space left on device'));
    expect(outage.current).toBeNull();
    outage.listed(listing(null, MESSAGE));
    outage.listed(listing(true));
    expect(outage.current).toBeNull();
  });

  it('keeps the start of an outage through a round with a stale answer, not after it', async () => {
    const outage = new EngineOutage();
    outage.failed(away);
    const since = outage.current!.since;
    outage.settled();
    await new Promise(resolve => setTimeout(resolve, 5));
    // Next round: the cached listing first, then the 503.
    outage.listed(listing(true));
    outage.failed(away);
    outage.settled();
    expect(outage.current?.since).toBe(since);
    // A round without an outage ends it; the next one starts anew.
    outage.answered();
    outage.settled();
    await new Promise(resolve => setTimeout(resolve, 5));
    outage.failed(away);
    expect(outage.current!.since).toBeGreaterThan(since);
  });
});
