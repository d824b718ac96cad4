using System.Collections.Concurrent;
using System.ComponentModel;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Kmem.Cli;

/// <summary>The options of `kmem stress`.</summary>
internal sealed class StressSettings : CommandSettings
{
    /// <summary>
    /// Each thread keeps up to 20,000 objects of 16 B to 20 KB live, about 50 MiB: 64
    /// threads hold some 3 GiB, and a typo should not ask for more.
    /// </summary>
    public const int MaxThreads = 64;

    [CommandOption("-q|--quick")]
    [Description("Run for 1.5 s instead of 5 s.")]
    public bool Quick { get; init; }

    [CommandOption("-t|--threads <N>")]
    [Description("Worker threads, each freeing a share of its objects on the next one (2 to 64).")]
    [DefaultValue(4)]
    public int Threads { get; init; } = 4;

    [CommandOption("-s|--seconds <SECONDS>")]
    [Description("How long the threads run, instead of 5 s (1.5 with --quick).")]
    public double? Seconds { get; init; }

    public override ValidationResult Validate()
    {
        // One thread would hand its "remote" frees to itself: no cross-thread free at all.
        if (Threads is < 2 or > MaxThreads)
            return ValidationResult.Error($"--threads must be from 2 to {MaxThreads}: the workload frees objects across threads");
        if (Seconds is <= 0 or > 3600 or double.NaN)
            return ValidationResult.Error("--seconds must be more than 0 and at most 3600");
        return ValidationResult.Success();
    }
}

/// <summary>
/// `kmem stress`: threads (four by default) run a mixed workload over kernel-like object
/// caches and kmalloc, handing a share of their objects to the next thread to free
/// (remote frees) and checking every object's contents; then the slabinfo table while
/// objects are live, and the memory left after everything is freed and shrunk.
/// </summary>
[SuppressMessage("Performance", "CA1812", Justification = "Spectre.Console.Cli creates it.")]
internal sealed unsafe class StressCommand(IAnsiConsole console) : KmemCommand<StressSettings>
{
    private const int WorkingSet = 20_000;
    private static readonly int[] s_kmallocSizes = [16, 40, 64, 100, 256, 1000, 3000, 8192, 20_000];

    public override int Execute(CommandContext context, StressSettings settings, CancellationToken cancellationToken)
    {
        int threads = settings.Threads;
        var duration = TimeSpan.FromSeconds(settings.Seconds ?? (settings.Quick ? 1.5 : 5));
        // Disposed after the final Shrink below; CA2000 cannot follow objects kept in an array,
        // and a stress run that throws ends the process, which takes the caches with it.
#pragma warning disable CA2000
        SlabCache[] caches =
        [
            SlabCache.Create("demo_inode", 600, new SlabCacheOptions { Flags = SlabFlags.HwCacheAlign }),
            SlabCache.Create("demo_dentry", 192),
            SlabCache.Create("demo_buffer_head", 104),
            SlabCache.Create("demo_checked", 64, new SlabCacheOptions { Flags = SlabFlags.ConsistencyChecks }),
        ];
#pragma warning restore CA2000
        long heldBefore = Pages.BytesHeld;
        var handoff = Enumerable.Range(0, threads).Select(_ => new ConcurrentQueue<Item>()).ToArray();
        var live = new List<Item>[threads];
        long ops = 0, corrupt = 0;
        IReadOnlyList<SlabInfoEntry> snapshot = [];

        console.MarkupLine($"[bold]kmem stress[/]: {threads} threads, {caches.Length} caches + kmalloc, {duration.TotalSeconds:0.0##} s");
        var sw = Stopwatch.StartNew();
        void RunWorkers(Action? tick)
        {
            var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
            {
                live[t] = Work(t, caches, handoff, sw, duration, ref ops, ref corrupt);
            })).ToList();
            workers.ForEach(w => w.Start());
            while (workers.Any(w => w.IsAlive))
            {
                tick?.Invoke();
                Thread.Sleep(50);
            }
            snapshot = SlabInfo.Snapshot();
        }
        // The bar follows the clock, so in a log (see StepProgress) there is nothing to say until the table.
        if (StepProgress.IsLive(console))
        {
            console.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
                .Start(ctx =>
                {
                    var task = ctx.AddTask("mixed alloc/free, cross-thread frees", maxValue: duration.TotalMilliseconds);
                    RunWorkers(() => task.Value = Math.Min(sw.Elapsed.TotalMilliseconds, duration.TotalMilliseconds));
                    task.Value = task.MaxValue;
                });
        }
        else
        {
            RunWorkers(null);
        }

        console.Write(SlabInfoView.Render(snapshot, "slabinfo with the working sets live"));
        console.MarkupLine($"{Interlocked.Read(ref ops):N0} operations in {sw.Elapsed.TotalSeconds:F2} s " +
                           $"({Interlocked.Read(ref ops) / sw.Elapsed.TotalSeconds / 1e6:F1} M ops/s); " +
                           $"pages held: {SlabInfoView.Bytes(Pages.BytesHeld)}");

        // Free everything, wherever it is, then give the memory back.
        foreach (var item in live.SelectMany(l => l).Concat(handoff.SelectMany(q => q)))
            corrupt += Release(item, caches);
        foreach (var cache in caches.Concat(Kmem.Kmalloc.Caches))
            cache.Shrink();
        long left = Pages.BytesHeld - heldBefore;
        console.MarkupLine($"after free + Shrink: {SlabInfoView.Bytes(Math.Max(0, left))} of slab memory still held " +
                           $"({SlabInfoView.Bytes(Pages.PeakBytesHeld)} at peak)");
        foreach (var cache in caches)
            cache.Dispose();
        if (corrupt != 0)
        {
            console.MarkupLine($"[red]{corrupt} objects were corrupted[/]");
            return 1;
        }
        console.MarkupLine("[green]every object's contents checked: no corruption[/]");
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
                        handoff[(t + 1) % handoff.Length].Enqueue(item);   // the next thread frees it
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
