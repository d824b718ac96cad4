using Kmem.Diagnostics;

namespace Kmem.Tests;

/// <summary>
/// The watch record's sequence lock (design.md, "Memory ordering of a watch"): a reader that
/// re-reads the progress after the fields never takes one call's object with another call's
/// count; the known-buggy control, which skips that re-read, does.
/// </summary>
public sealed class CallbackWatchLitmusTests
{
    private static readonly string[] s_targets = [.. Enumerable.Range(0, 16).Select(i => $"cache-{i}")];

    [Fact]
    public void A_reader_that_rechecks_the_progress_sees_no_torn_call()
    {
        (long torn, long reads) = Run(recheck: true, TimeSpan.FromMilliseconds(400));
        Assert.True(reads > 1000, $"only {reads} consistent reads");
        Assert.Equal(0, torn);
    }

    [Fact]
    public void The_known_buggy_reader_without_the_recheck_sees_torn_calls()
    {
        (long torn, _) = Run(recheck: false, TimeSpan.FromSeconds(5), stopAfterTorn: 3);
        Assert.True(torn > 0, "the control never tore: the test could not catch a missing recheck");
    }

    private static (long Torn, long Reads) Run(bool recheck, TimeSpan duration, long stopAfterTorn = long.MaxValue)
    {
        var watch = new CallbackWatch(Thread.CurrentThread, "a litmus writer");
        long torn = 0, reads = 0;
        int stop = 0;
        var writer = new Thread(() =>
        {
            // Each call's fields agree with one another: object == count, target == its name.
            for (int i = 1; Volatile.Read(ref stop) == 0; i++)
            {
                watch.Enter(CallbackKind.Destructor, s_targets[i & 15], null, i, i, "");
                watch.Exit();
            }
        });
        writer.Start();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < duration && torn < stopAfterTorn)
        {
            long p = watch.Progress;
            if ((p & 1) == 0 || !watch.TryReadCall(p, out StalledCall call, recheck))
                continue;
            reads++;
            if (call.Object != call.Count || call.Target != s_targets[call.Count & 15])
                torn++;
        }
        Volatile.Write(ref stop, 1);
        writer.Join();
        return (torn, reads);
    }
}
