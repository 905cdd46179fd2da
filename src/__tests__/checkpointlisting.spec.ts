import type { ICheckpointListing, ITfEnvClient } from '../api';
import { CheckpointListing } from '../checkpointlisting';

function listingOf(envId: string): ICheckpointListing {
  return { environment: envId, exists: true, checkpoints: [] };
}

function makeListing(interval = 1000): {
  listing: CheckpointListing;
  client: ITfEnvClient;
  changed: jest.Mock;
} {
  const client = {
    checkpoints: jest.fn(async (envId: string) => listingOf(envId)),
    deleteCheckpoint: jest.fn(async () => ({}))
  } as unknown as ITfEnvClient;
  const changed = jest.fn();
  const listing = new CheckpointListing({
    client,
    interval: () => interval,
    changed
  });
  return { listing, client, changed };
}

describe('CheckpointListing', () => {
  afterEach(() => jest.restoreAllMocks());

  it('lists again only once the refresh interval (0.9 of it) passed', async () => {
    let now = 10_000;
    jest.spyOn(Date, 'now').mockImplementation(() => now);
    const { listing, client, changed } = makeListing(1000);
    await listing.poll('a', false);
    expect(client.checkpoints).toHaveBeenCalledTimes(1);
    expect(listing.stateOf('a')).toMatchObject({
      listing: listingOf('a'),
      loading: false
    });
    expect(changed).toHaveBeenCalled();
    now += 800;
    await listing.poll('a', false);
    expect(client.checkpoints).toHaveBeenCalledTimes(1);
    now += 100;
    await listing.poll('a', false);
    expect(client.checkpoints).toHaveBeenCalledTimes(2);
    // Forced: now.
    await listing.poll('a', true);
    expect(client.checkpoints).toHaveBeenCalledTimes(3);
  });

  it('never polls when the model does not (interval 0), but lists a new environment', async () => {
    const { listing, client } = makeListing(0);
    await listing.poll('a', false);
    await listing.poll('a', false);
    expect(client.checkpoints).toHaveBeenCalledTimes(1);
    await listing.poll('b', false);
    expect(client.checkpoints).toHaveBeenLastCalledWith('b');
    expect(listing.stateOf('a')).toMatchObject({
      listing: null,
      loading: true
    });
    expect(listing.stateOf(null)).toBeNull();
  });

  it('lists again after a delete only while the environment is shown', async () => {
    const { listing, client } = makeListing();
    await listing.poll('a', false);
    const item = { name: 'run1', kind: 'keras', etag: 'e1' };
    await listing.remove('a', item, () => false);
    expect(client.deleteCheckpoint).toHaveBeenCalledWith('a', 'run1', 'e1');
    expect(client.checkpoints).toHaveBeenCalledTimes(1);
    await listing.remove('a', item, id => id === 'a');
    expect(client.checkpoints).toHaveBeenCalledTimes(2);
  });

  it('drops answers that come after dispose', async () => {
    const { listing, changed } = makeListing();
    const pending = listing.poll('a', false);
    changed.mockClear();
    listing.dispose();
    await pending;
    expect(changed).not.toHaveBeenCalled();
  });
});
