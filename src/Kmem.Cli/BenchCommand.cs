using System.Runtime.InteropServices;
using Kmem.Workloads;
using Spectre.Console;

namespace Kmem.Cli;

/// <summary>
/// `kmem bench`: the issue's figures as ratios taken in one run on this machine (it is
/// shared and noisy; only ratios within one run mean much). BenchmarkDotNet's figures
/// in docs/benchmarks.md are the reference; this is the quick look.
/// </summary>
internal static class BenchCommand
{
    private sealed record Figure(string Name, string Value, string Target, bool Met);

    public static int Run(bool quick)
    {
        var d = TimeSpan.FromSeconds(quick ? 0.5 : 2);
        var figures = new List<Figure>();
        AnsiConsole.MarkupLine($"[bold]kmem bench[/]{(quick ? " --quick" : "")}: {Environment.ProcessorCount} cores, " +
                               $"{RuntimeInformation.FrameworkDescription}, {RuntimeInformation.OSDescription}");

        var single = new Dictionary<string, double>();
        var scaling = new Dictionary<int, double>();
        var producerConsumer = new Dictionary<string, double>();
        MemoryFootprint? footprint = null;
        var lifecycle = new Dictionary<(string Mode, int Threads), LifecycleResult>();

        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new SpinnerColumn())
            .Start(ctx =>
            {
                foreach (var (name, run) in SingleThreadWorkload.Runs(64))
                {
                    var task = ctx.AddTask($"1 thread, 64 B: {name}", maxValue: 1);
                    single[name] = run(d);
                    task.Increment(1);
                }
                using (var slab = new SlabCacheAllocator(64))
                {
                    foreach (int threads in new[] { 1, 2, 8 })
                    {
                        var task = ctx.AddTask($"SlabCache, {threads} thread(s)", maxValue: 1);
                        scaling[threads] = ThroughputWorkloads.Scaling(slab, threads, d).OpsPerSecond;
                        task.Increment(1);
                    }
                }
                foreach (var make in Allocator.All(64))
                {
                    using var allocator = make();
                    var task = ctx.AddTask($"producer/consumer: {allocator.Name}", maxValue: 1);
                    producerConsumer[allocator.Name] = ThroughputWorkloads.ProducerConsumer(allocator, d).OpsPerSecond;
                    task.Increment(1);
                }
                foreach (int threads in new[] { 1, 2 })
                {
                    foreach (string mode in LifecycleWorkload.Modes)
                    {
                        var task = ctx.AddTask($"expensive object state, {mode}, {threads} thread(s)", maxValue: 1);
                        lifecycle[(mode, threads)] = LifecycleWorkload.Run(mode, threads, d);
                        task.Increment(1);
                    }
                }
                var mem = ctx.AddTask("memory: 1M live 64 B objects", maxValue: 1);
                footprint = MemoryWorkload.Run(1_000_000, 64);
                mem.Increment(1);
            });

        double floor = single["bare free list (floor)"];
        double Ns(string name) => 1e9 / single[name];
        double slabRatio = floor / single["SlabCache"];
        double kmallocRatio = floor / single["Kmalloc"];
        double vsNative = single["SlabCache"] / single["NativeMemory"];
        figures.Add(new("SlabCache 64 B pair / floor", $"{slabRatio:F2}x ({Ns("SlabCache"):F1} vs {Ns("bare free list (floor)"):F1} ns)", "<= 2.0x", slabRatio <= 2.0));
        figures.Add(new("SlabCache speed-up over NativeMemory", $"{vsNative:F2}x ({Ns("NativeMemory"):F1} ns native)", ">= 3x", vsNative >= 3));
        figures.Add(new("Kmalloc(64) pair / floor", $"{kmallocRatio:F2}x ({Ns("Kmalloc"):F1} ns)", "<= 2.5x", kmallocRatio <= 2.5));
        double two = scaling[2] / scaling[1], eight = scaling[8] / scaling[1];
        figures.Add(new("2 threads / 1 thread", $"{two:F2}x ({scaling[1] / 1e6:F0} -> {scaling[2] / 1e6:F0} M pairs/s)", ">= 1.8x", two >= 1.8));
        figures.Add(new("8 threads / 1 thread", $"{eight:F2}x ({scaling[8] / 1e6:F0} M pairs/s)", ">= 1.6x", eight >= 1.6));
        foreach (string name in new[] { "SlabCache", "Kmalloc" })
        {
            double r = producerConsumer[name] / producerConsumer["NativeMemory"];
            figures.Add(new($"producer/consumer {name} / NativeMemory", $"{r:F2}x ({producerConsumer[name] / 1e6:F1} vs {producerConsumer["NativeMemory"] / 1e6:F1} M/s)", ">= 1.0x", r >= 1.0));
        }
        figures.Add(new("1M live 64 B objects: overhead", $"{footprint!.OverheadPercent:F2}% ({SlabInfoView.Bytes(footprint.BytesWhileLive)})", "<= 10%", footprint.OverheadPercent <= 10));
        figures.Add(new("after free + Shrink: slab bytes held", SlabInfoView.Bytes(footprint.BytesAfterShrink), "< 1 MiB", footprint.BytesAfterShrink < 1 << 20));

        foreach (int threads in new[] { 1, 2 })
        {
            LifecycleResult perUse = lifecycle[("per-use", threads)], ctor = lifecycle[("ctor-dtor", threads)], plain = lifecycle[("plain", threads)];
            double fall = ctor.ExpensivePerCycle == 0 ? double.PositiveInfinity : perUse.ExpensivePerCycle / ctor.ExpensivePerCycle;
            figures.Add(new($"state work per cycle, per-use / ctor-dtor, {threads}T",
                $"{fall:G3}x ({perUse.ExpensivePerCycle:F2} vs {ctor.ExpensivePerCycle:G2})",
                $">= {ctor.ObjectsPerSlab}x (objects/slab)", fall >= ctor.ObjectsPerSlab));
            double slower = plain.CyclesPerSecond / ctor.CyclesPerSecond;
            figures.Add(new($"ctor-dtor time per cycle / plain, {threads}T",
                $"{slower:F2}x ({ctor.CyclesPerSecond / 1e6:F1} vs {plain.CyclesPerSecond / 1e6:F1} M/s; per-use {perUse.CyclesPerSecond / 1e6:F1})",
                "<= 1.3x", slower <= 1.3));
        }

        var table = new Table().Border(TableBorder.Rounded).Title("kmem bench");
        table.AddColumns("figure", "measured", "target", "");
        foreach (var f in figures)
            table.AddRow(f.Name, f.Value, f.Target, f.Met ? "[green]met[/]" : "[yellow]missed[/]");
        AnsiConsole.Write(table);
        return 0;
    }
}
