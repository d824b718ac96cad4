using System.Collections.Concurrent;
using System.Diagnostics;
using Spectre.Console;

namespace Kmem.Cli;

/// <summary>
/// `kmem stress`: four threads run a mixed workload over kernel-like object caches and
/// kmalloc, handing a share of their objects to the next thread to free (remote frees)
/// and checking every object's contents; then the slabinfo table while objects are
/// live, and the memory left after everything is freed and shrunk.
/// </summary>
internal static unsafe class StressCommand
{
    private const int Threads = 4;
    private const int WorkingSet = 20_000;
    private static readonly int[] s_kmallocSizes = [16, 40, 64, 100, 256, 1000, 3000, 8192, 20_000];

    public static int Run(bool quick)
    {
        var duration = TimeSpan.FromSeconds(quick ? 1.5 : 5);
        SlabCache[] caches =
        [
            SlabCache.Create("demo_inode", 600, new SlabCacheOptions { Flags = SlabFlags.HwCacheAlign }),
            SlabCache.Create("demo_dentry", 192),
            SlabCache.Create("demo_buffer_head", 104),
            SlabCache.Create("demo_checked", 64, new SlabCacheOptions { Flags = SlabFlags.ConsistencyChecks }),
        ];
        long heldBefore = Pages.BytesHeld;
        var handoff = Enumerable.Range(0, Threads).Select(_ => new ConcurrentQueue<Item>()).ToArray();
        var live = new List<Item>[Threads];
        long ops = 0, corrupt = 0;
        IReadOnlyList<SlabInfoEntry> snapshot = [];

        AnsiConsole.MarkupLine($"[bold]kmem stress[/]: {Threads} threads, {caches.Length} caches + kmalloc, {duration.TotalSeconds:F1} s");
        var sw = Stopwatch.StartNew();
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("mixed alloc/free, cross-thread frees", maxValue: duration.TotalMilliseconds);
                var workers = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
                {
                    live[t] = Work(t, caches, handoff, sw, duration, ref ops, ref corrupt);
                })).ToList();
                workers.ForEach(w => w.Start());
                while (workers.Any(w => w.IsAlive))
                {
                    task.Value = Math.Min(sw.Elapsed.TotalMilliseconds, duration.TotalMilliseconds);
                    Thread.Sleep(50);
                }
                task.Value = task.MaxValue;
                snapshot = SlabInfo.Snapshot();
            });

        AnsiConsole.Write(SlabInfoView.Render(snapshot, "slabinfo with the working sets live"));
        AnsiConsole.MarkupLine($"{Interlocked.Read(ref ops):N0} operations in {sw.Elapsed.TotalSeconds:F2} s " +
                               $"({Interlocked.Read(ref ops) / sw.Elapsed.TotalSeconds / 1e6:F1} M ops/s); " +
                               $"pages held: {SlabInfoView.Bytes(Pages.BytesHeld)}");

        // Free everything, wherever it is, then give the memory back.
        foreach (var item in live.SelectMany(l => l).Concat(handoff.SelectMany(q => q)))
            corrupt += Release(item, caches);
        foreach (var cache in caches.Concat(Kmem.Kmalloc.Caches))
            cache.Shrink();
        long left = Pages.BytesHeld - heldBefore;
        AnsiConsole.MarkupLine($"after free + Shrink: {SlabInfoView.Bytes(Math.Max(0, left))} of slab memory still held " +
                               $"({SlabInfoView.Bytes(Pages.PeakBytesHeld)} at peak)");
        foreach (var cache in caches)
            cache.Dispose();
        if (corrupt != 0)
        {
            AnsiConsole.MarkupLine($"[red]{corrupt} objects were corrupted[/]");
            return 1;
        }
        AnsiConsole.MarkupLine("[green]every object's contents checked: no corruption[/]");
        return 0;
    }

    /// <summary>An object in flight: where it came from and the stamp written into it.</summary>
    private readonly record struct Item(nint Address, int Source, long Stamp);

    private static List<Item> Work(int t, SlabCache[] caches, ConcurrentQueue<Item>[] handoff, Stopwatch sw,
        TimeSpan duration, ref long ops, ref long corrupt)
    {
        var rng = new Random(t);
        var mine = new List<Item>(WorkingSet);
        long stamp = (long)t << 40, done = 0, bad = 0;
        while (sw.Elapsed < duration)
        {
            for (int step = 0; step < 1024; step++, done++)
            {
                if (handoff[t].TryDequeue(out var remote))
                    bad += Release(remote, caches);
                if (mine.Count < WorkingSet && rng.Next(100) < 55)
                {
                    int source = rng.Next(caches.Length + s_kmallocSizes.Length);
                    void* p = source < caches.Length ? caches[source].Alloc() : Kmem.Kmalloc.Alloc((nuint)s_kmallocSizes[source - caches.Length]);
                    *(long*)p = ++stamp;
                    mine.Add(new Item((nint)p, source, stamp));
                }
                else if (mine.Count > 0)
                {
                    int i = rng.Next(mine.Count);
                    var item = mine[i];
                    mine[i] = mine[^1];
                    mine.RemoveAt(mine.Count - 1);
                    if (rng.Next(4) == 0)
                        handoff[(t + 1) % Threads].Enqueue(item);   // the next thread frees it
                    else
                        bad += Release(item, caches);
                }
            }
        }
        Interlocked.Add(ref ops, done);
        Interlocked.Add(ref corrupt, bad);
        return mine;
    }

    private static int Release(Item item, SlabCache[] caches)
    {
        int bad = *(long*)item.Address == item.Stamp ? 0 : 1;
        if (item.Source < caches.Length)
            caches[item.Source].Free((void*)item.Address);
        else
            Kmem.Kmalloc.Free((void*)item.Address);
        return bad;
    }
}
