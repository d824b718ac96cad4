namespace Kmem.Tests;

/// <summary>
/// A litmus test of <see cref="WorkFlag"/>, the "maybe pending" flag of FreeNoLock's
/// deferred lists: a producer publishes an item (a CAS push) and announces it while a
/// consumer consumes, both starting together, with the flag left set by an earlier item
/// (the case that matters: the producer then does not write it). An item must never be
/// left queued with the flag clear, where no slow path would drain it. The real order
/// (clear, fence, take) never strands one; the known-buggy order (take, then clear), run
/// in the same harness, must.
/// </summary>
[Collection(nameof(GlobalStateCollection))]
public class WorkFlagLitmusTests
{
    [Fact]
    public void The_real_order_never_strands_an_item_with_the_flag_clear()
    {
        (int stranded, int iterations) = Run(buggy: false, iterations: 200_000, stopAfter: int.MaxValue);
        Assert.Equal(0, stranded);
        Assert.Equal(200_000, iterations);
    }

    [Fact]
    public void Taking_before_clearing_strands_items_and_the_same_test_catches_it()
    {
        (int stranded, int iterations) = Run(buggy: true, iterations: 2_000_000, stopAfter: 3);
        Assert.True(stranded > 0, $"no stranded item in {iterations} iterations: the litmus cannot see the bad order");
    }

    private static (int Stranded, int Iterations) Run(bool buggy, int iterations, int stopAfter)
    {
        var flag = new WorkFlag();
        long head = 0;   // a one-item Treiber stack: 0 empty, else the item
        var gate = new LitmusGate();
        int stranded = 0, done = 0;
        bool stop = false;
        var producer = new Thread(() =>
        {
            var rng = new Random(3);
            for (int i = 1; ; i++)
            {
                gate.Arrive();
                if (Volatile.Read(ref stop))
                    return;
                LitmusGate.Spin(rng.Next(4));
                Interlocked.CompareExchange(ref head, i, 0);   // P1: publish
                flag.Announce();                               // P2, P3
                gate.Arrive();
                // Both done: an item still queued needs the flag set, or nobody drains it.
                if (Interlocked.Read(ref head) != 0 && !flag.IsSet)
                    stranded++;
                Interlocked.Exchange(ref head, 0);
                flag.Announce();                               // the next round starts with a stale announcement
                done = i;
                if (done >= iterations || stranded >= stopAfter)
                    Volatile.Write(ref stop, true);
            }
        });
        var consumer = new Thread(() =>
        {
            var rng = new Random(4);
            while (true)
            {
                gate.Arrive();
                if (Volatile.Read(ref stop))
                    return;
                LitmusGate.Spin(rng.Next(4));
                if (buggy)
                {
                    if (flag.IsSet)
                    {
                        Interlocked.Exchange(ref head, 0);     // C3 first: the bug
                        flag.TryBeginConsume();                // then C1, C2
                    }
                }
                else if (flag.TryBeginConsume())               // C1, C2
                {
                    Interlocked.Exchange(ref head, 0);         // C3
                }
                gate.Arrive();
            }
        });
        flag.Announce();
        producer.Start();
        consumer.Start();
        Assert.True(producer.Join(TimeSpan.FromMinutes(2)) && consumer.Join(TimeSpan.FromMinutes(2)), "litmus threads hung");
        return (stranded, done);
    }
}
