"""The token bucket behind --bandwidth-limit, on a fake clock, and the RATE syntax."""
import random

import pytest

from osam.common.bandwidth import MIN_BURST, TokenBucket, format_rate, parse_rate


class Sender:
    """Sends chunks through a bucket as the daemons do: reserve, wait what it says, send."""

    def __init__(self, bucket: TokenBucket):
        self.bucket, self.now, self.sent = bucket, 0.0, 0

    def send(self, n: int) -> None:
        self.now += self.bucket.reserve(n, self.now)
        self.sent += n


def test_a_full_bucket_lets_its_burst_through_at_once():
    b = TokenBucket(10e6, burst=1e6)
    assert b.reserve(600_000, 0.0) == 0.0
    assert b.reserve(400_000, 0.0) == 0.0
    assert b.reserve(100_000, 0.0) == pytest.approx(0.01)


def test_the_default_burst_is_a_twentieth_of_a_second_and_at_least_64_kib():
    assert TokenBucket(20e6).burst == pytest.approx(1e6)
    assert TokenBucket(100e3).burst == MIN_BURST


def test_a_reservation_larger_than_the_burst_goes_through_after_its_time():
    b = TokenBucket(1e6, burst=100e3)
    assert b.reserve(2_100_000, 0.0) == pytest.approx(2.0)
    assert b.wait_time(1.0) == pytest.approx(1.0)
    assert b.wait_time(2.5) == 0.0


def test_tokens_refill_at_the_rate_up_to_the_burst_only():
    b = TokenBucket(1e6, burst=100e3)
    b.reserve(100e3, 0.0)
    assert b.reserve(50e3, 0.05) == 0.0           # 50 kB came back in 50 ms
    assert b.reserve(100e3, 100.0) == 0.0          # a long pause refills no more than the burst
    assert b.reserve(1e3, 100.0) == pytest.approx(0.001)


@pytest.mark.parametrize("rate", [1e6, 10e6, 123e6])
def test_a_sender_of_random_chunks_keeps_within_the_rate(rate):
    rnd = random.Random(int(rate))
    s = Sender(TokenBucket(rate))
    while s.sent < rate * 30:
        s.send(rnd.randint(1, 1 << 20))
        s.now += rnd.random() * 0.001                # time the sender spends elsewhere
    measured = s.sent / s.now
    assert rate * 0.99 < measured <= rate * 1.01


def test_senders_sharing_a_bucket_share_its_rate_and_are_served_in_turn():
    clock, bucket = 0.0, TokenBucket(10e6)
    ready = [0.0] * 5                                  # when each sender may send next
    sent = [0] * 5
    while sum(sent) < 200e6:
        i = min(range(5), key=lambda k: ready[k])      # the next sender to wake up
        clock = max(clock, ready[i])
        ready[i] = clock + bucket.reserve(256 << 10, clock)
        sent[i] += 256 << 10
    assert sum(sent) / clock == pytest.approx(10e6, rel=0.01)
    assert max(sent) - min(sent) <= 2 * (256 << 10)   # nobody starves (the first burst aside)


def test_a_bucket_needs_a_positive_rate():
    with pytest.raises(ValueError):
        TokenBucket(0)


@pytest.mark.parametrize("text, rate", [
    ("20M", 20e6), ("20MB/s", 20e6), ("20 MB", 20e6), ("512Ki", 512 * 1024), ("1.5G", 1.5e9),
    ("10Mi", 10 * 1024 * 1024), ("250k", 250e3), ("4096", 4096.0), ("2GiB/s", 2 * 1024 ** 3),
])
def test_rates_are_bytes_a_second(text, rate):
    assert parse_rate(text) == pytest.approx(rate)


@pytest.mark.parametrize("text", ["0", "", "none", "off", "0M"])
def test_zero_means_no_limit(text):
    assert parse_rate(text) is None


@pytest.mark.parametrize("text", ["fast", "-5M", "20X", "M", "100", "1e6"])
def test_other_rates_are_refused(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_rates_print_in_decimal_units():
    assert format_rate(20e6) == "20 MB/s"
    assert format_rate(None) == "unlimited"
    assert format_rate(1.5e9) == "1.5 GB/s"
