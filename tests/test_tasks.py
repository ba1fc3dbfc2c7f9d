"""The epoch's batches: length-grouped (transformers' sampler), seeded by (seed, epoch)."""

from lora_repro.tasks import epoch_batches

LENGTHS = [(7 * i) % 50 + 1 for i in range(400)]


def test_every_row_once_in_batches_of_the_given_size():
    batches = epoch_batches(LENGTHS, batch_size=4, seed=0, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(400))
    assert all(len(b) == 4 for b in batches)


def test_order_repeats_for_the_same_seed_and_epoch_only():
    first = epoch_batches(LENGTHS, 4, seed=0, epoch=0)
    assert epoch_batches(LENGTHS, 4, seed=0, epoch=0) == first  # a resumed run sees the same batches
    assert epoch_batches(LENGTHS, 4, seed=0, epoch=1) != first
    assert epoch_batches(LENGTHS, 4, seed=1, epoch=0) != first


def test_batches_group_similar_lengths_and_the_longest_comes_first():
    batches = epoch_batches(LENGTHS, 4, seed=0, epoch=0)
    assert LENGTHS[batches[0][0]] == max(LENGTHS)  # an out-of-memory shows at once, not late
    spread = [max(LENGTHS[i] for i in b) - min(LENGTHS[i] for i in b) for b in batches]
    assert sum(spread) / len(spread) < 5  # a random batch of 4 spreads ~25
