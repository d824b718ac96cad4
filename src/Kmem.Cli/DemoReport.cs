using System.Globalization;
using Kmem.Locking;
using Kmem.Workloads;
using Spectre.Console;

namespace Kmem.Cli;

/// <summary>What `kmem demo` prints: the cover letter's table, patch 4's lock table, and the targets.</summary>
internal static class DemoReport
{
    /// <summary>One line of the verdict: a target of the issue, the figure measured, and whether it is met.</summary>
    public sealed record Target(string Name, string Goal, string Measured, bool Met);

    public static Table Throughput(IReadOnlyList<SeedRunResult> results, string workload)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .Title($"[bold]{workload}-like[/]: object lifetimes per second (all threads)")
            .AddColumns("threads", "mode", "lifetimes/s", "vs baseline", "no-percpu / this", "pcpu_alloc_mutex per lifetime", "contended", "percpu_counters_lock per lifetime");
        foreach (var r in results.Where(r => r.Workload == workload))
        {
            SeedRunResult baseline = SeedExperiment.Peer(results, r, "baseline")!;
            SeedRunResult floor = SeedExperiment.Peer(results, r, "no-percpu")!;
            table.AddRow(
                r.Mode == SeedWorkload.Modes[0] ? r.Threads.ToString(CultureInfo.InvariantCulture) : "",
                r.Mode,
                Rate(r.OpsPerSecond),
                r.Mode == "baseline" ? "" : Percent(r.OpsPerSecond / baseline.OpsPerSecond - 1),
                r.Mode == "no-percpu" ? "" : string.Create(CultureInfo.InvariantCulture, $"{floor.OpsPerSecond / r.OpsPerSecond:F2}x"),
                PerLifetime(r.AllocMutexAcquisitionsPerLifetime),
                r.AllocMutexContended.ToString("N0", CultureInfo.InvariantCulture),
                workload == "mm" ? PerLifetime(r.CountersLockAcquisitionsPerLifetime) : "-");
        }
        return table;
    }

    /// <summary>Patch 4's `perf lock report` before and after, at the highest thread count.</summary>
    public static string LockTable(IReadOnlyList<SeedRunResult> results, string workload)
    {
        int threads = results.Max(r => r.Threads);
        SeedRunResult before = results.First(r => r.Workload == workload && r.Threads == threads && r.Mode == "baseline");
        SeedRunResult after = results.First(r => r.Workload == workload && r.Threads == threads && r.Mode == "ctor-dtor");
        return $"{workload}-like, {threads} threads, locks of the run (as `perf lock report` prints them)\n\nBefore (baseline):\n"
            + LockStatistics.Format(Busiest(before)) + "\nAfter (ctor-dtor):\n" + LockStatistics.Format(Busiest(after));
    }

    private static IEnumerable<LockStatistics> Busiest(SeedRunResult r) =>
        r.Locks.Where(l => l.Acquired > 0).OrderByDescending(l => l.Contended).ThenByDescending(l => l.Acquired);

    public static List<Target> Targets(IReadOnlyList<SeedRunResult> results)
    {
        var targets = new List<Target>();
        int top = results.Max(r => r.Threads);
        int bottom = results.Min(r => r.Threads);
        foreach (string w in SeedWorkload.Workloads)
        {
            SeedRunResult[] runs = [.. results.Where(r => r.Workload == w)];
            double expected = w == "mm" ? 2 : 3;
            double[] baseline = [.. runs.Where(r => r.Mode == "baseline").Select(r => r.AllocMutexAcquisitionsPerLifetime)];
            targets.Add(new Target($"{w}: pcpu_alloc_mutex per lifetime, baseline", $"{expected}",
                Range(baseline), baseline.All(b => Math.Abs(b - expected) < 0.05)));
            double[] ctor = [.. runs.Where(r => r.Mode == "ctor-dtor").Select(r => r.AllocMutexAcquisitionsPerLifetime)];
            targets.Add(new Target($"{w}: pcpu_alloc_mutex per lifetime, ctor-dtor", "< 0.05", Range(ctor), ctor.All(c => c < 0.05)));
            if (w == "mm")
            {
                // The second global lock of percpu_counter_init_many/destroy_many.
                double[] listBase = [.. runs.Where(r => r.Mode == "baseline").Select(r => r.CountersLockAcquisitionsPerLifetime)];
                targets.Add(new Target("mm: percpu_counters_lock per lifetime, baseline", "2", Range(listBase), listBase.All(b => Math.Abs(b - 2) < 0.05)));
                double[] listCtor = [.. runs.Where(r => r.Mode == "ctor-dtor").Select(r => r.CountersLockAcquisitionsPerLifetime)];
                targets.Add(new Target("mm: percpu_counters_lock per lifetime, ctor-dtor", "< 0.05", Range(listCtor), listCtor.All(c => c < 0.05)));
            }
            foreach (int t in new[] { bottom, top }.Distinct())
            {
                SeedRunResult c = runs.First(r => r.Mode == "ctor-dtor" && r.Threads == t);
                SeedRunResult f = runs.First(r => r.Mode == "no-percpu" && r.Threads == t);
                double ratio = f.OpsPerSecond / c.OpsPerSecond;
                targets.Add(new Target($"{w}: no-percpu / ctor-dtor time, {t} thread{(t == 1 ? "" : "s")}", "<= 1.3x",
                    string.Create(CultureInfo.InvariantCulture, $"{ratio:F2}x"), ratio <= 1.3));
            }
            SeedRunResult bTop = runs.First(r => r.Mode == "baseline" && r.Threads == top);
            SeedRunResult cTop = runs.First(r => r.Mode == "ctor-dtor" && r.Threads == top);
            string fewer = cTop.AllocMutexContended == 0
                ? $"{bTop.AllocMutexContended:N0} -> 0"
                : string.Create(CultureInfo.InvariantCulture, $"{bTop.AllocMutexContended:N0} -> {cTop.AllocMutexContended:N0} ({(double)bTop.AllocMutexContended / cTop.AllocMutexContended:F0}x)");
            targets.Add(new Target($"{w}: contended pcpu_alloc_mutex, {top} threads", ">= 20x fewer", fewer,
                bTop.AllocMutexContended >= 20 * Math.Max(1, cTop.AllocMutexContended)));
            SeedRunResult b1 = runs.First(r => r.Mode == "baseline" && r.Threads == bottom);
            SeedRunResult c1 = runs.First(r => r.Mode == "ctor-dtor" && r.Threads == bottom);
            targets.Add(new Target($"{w}: ctor-dtor gain over baseline, {bottom} thread", w == "mm" ? "series: +4% (exec, 1 thread)" : "series: -26% system time",
                Percent(c1.OpsPerSecond / b1.OpsPerSecond - 1), c1.OpsPerSecond > b1.OpsPerSecond));
        }
        return targets;
    }

    public static Table TargetTable(IEnumerable<Target> targets)
    {
        var table = new Table().Border(TableBorder.Rounded).Title("[bold]the issue's numbers[/]")
            .AddColumns("figure", "target", "measured", "");
        foreach (Target t in targets)
            table.AddRow(Markup.Escape(t.Name), Markup.Escape(t.Goal), Markup.Escape(t.Measured), t.Met ? "[green]met[/]" : "[red]missed[/]");
        return table;
    }

    public static string Rate(double perSecond) => perSecond switch
    {
        >= 1e6 => string.Create(CultureInfo.InvariantCulture, $"{perSecond / 1e6:F2} M"),
        >= 1e3 => string.Create(CultureInfo.InvariantCulture, $"{perSecond / 1e3:F1} k"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{perSecond:F0}"),
    };

    public static string Percent(double fraction) => string.Create(CultureInfo.InvariantCulture, $"{fraction * 100:+0.0;-0.0}%");

    private static string Range(double[] values) => values.Length == 0 ? "-" : $"{PerLifetime(values.Min())} .. {PerLifetime(values.Max())}";

    /// <summary>Acquisitions per lifetime: plain down to 0.001, then in powers of ten so a small figure does not read as 0.</summary>
    public static string PerLifetime(double v) => v is > 0 and < 0.001
        ? v.ToString("0.0e0", CultureInfo.InvariantCulture)
        : v.ToString("0.###", CultureInfo.InvariantCulture);
}
