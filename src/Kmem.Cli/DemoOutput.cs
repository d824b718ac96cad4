using System.Globalization;
using System.Text;
using System.Text.Json;
using Kmem.Workloads;

namespace Kmem.Cli;

/// <summary>The files `kmem demo` writes: one JSON record per run, two charts per workload, a Markdown summary.</summary>
internal static class DemoOutput
{
    private static readonly JsonSerializerOptions s_json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    /// <summary>The record of one run, as `--json` and results.json hold it.</summary>
    public sealed record RunRecord(
        string Workload, string Mode, int Threads, double OpsPerSecond, long Lifetimes,
        long AllocMutexAcquisitions, double AllocMutexAcquisitionsPerLifetime, long AllocMutexContended,
        double? GainOverBaseline, double? NoPercpuOverThis, long CheckFailures, double Seconds, IReadOnlyList<LockRecord> Locks,
        long CountersLockAcquisitions, double CountersLockAcquisitionsPerLifetime);

    public sealed record LockRecord(string Name, long Acquired, long Contended, double AvgWaitNs, double TotalWaitNs, double MaxWaitNs, double MinWaitNs);

    public static List<RunRecord> Records(IReadOnlyList<SeedRunResult> results) =>
    [
        .. results.Select(r =>
        {
            SeedRunResult baseline = SeedExperiment.Peer(results, r, "baseline")!;
            SeedRunResult floor = SeedExperiment.Peer(results, r, "no-percpu")!;
            return new RunRecord(r.Workload, r.Mode, r.Threads, Math.Round(r.OpsPerSecond), r.Lifetimes,
                r.AllocMutexAcquisitions, r.AllocMutexAcquisitionsPerLifetime, r.AllocMutexContended,
                r.Mode == "baseline" ? null : r.OpsPerSecond / baseline.OpsPerSecond - 1,
                r.Mode == "no-percpu" ? null : floor.OpsPerSecond / r.OpsPerSecond,
                r.CheckFailures, r.Seconds,
                [.. r.Locks.Select(l => new LockRecord(l.Name, l.Acquired, l.Contended,
                    l.AverageWait.TotalNanoseconds, l.TotalWait.TotalNanoseconds, l.MaxWait.TotalNanoseconds, l.MinWait.TotalNanoseconds))],
                r.CountersLockAcquisitions, r.CountersLockAcquisitionsPerLifetime);
        }),
    ];

    public static void WriteJson(string path, IReadOnlyList<SeedRunResult> results)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir != null)
            Directory.CreateDirectory(dir);
        File.WriteAllText(path, JsonSerializer.Serialize(Records(results), s_json));
    }

    /// <summary>Writes results.json, the charts (SVG and PNG) and summary.md into <paramref name="folder"/>; returns the files.</summary>
    public static List<string> WriteFolder(string folder, IReadOnlyList<SeedRunResult> results, IReadOnlyList<DemoReport.Target> targets, string machine, DemoEnvironment env)
    {
        Directory.CreateDirectory(folder);
        var files = new List<string>();
        string json = Path.Combine(folder, "results.json");
        WriteJson(json, results);
        files.Add(json);
        files.AddRange(DemoCharts.Write(folder, Records(results), env));
        string md = Path.Combine(folder, "summary.md");
        File.WriteAllText(md, Markdown(results, targets, machine));
        files.Add(md);
        return files;
    }

    private static string Markdown(IReadOnlyList<SeedRunResult> results, IReadOnlyList<DemoReport.Target> targets, string machine)
    {
        var md = new StringBuilder();
        md.AppendLine("# kmem demo: the seed series' experiment").AppendLine().AppendLine(machine).AppendLine();
        foreach (string w in SeedWorkload.Workloads)
        {
            md.AppendLine(CultureInfo.InvariantCulture, $"## {w}-like").AppendLine();
            md.AppendLine("| threads | mode | lifetimes/s | vs baseline | no-percpu / this | pcpu_alloc_mutex per lifetime | contended | percpu_counters_lock per lifetime |");
            md.AppendLine("|---|---|---|---|---|---|---|---|");
            foreach (RunRecord r in Records(results).Where(r => r.Workload == w))
            {
                md.AppendLine(CultureInfo.InvariantCulture,
                    $"| {r.Threads} | {r.Mode} | {DemoReport.Rate(r.OpsPerSecond)} | {(r.GainOverBaseline is double g ? DemoReport.Percent(g) : "")} | {(r.NoPercpuOverThis is double f ? f.ToString("F2", CultureInfo.InvariantCulture) + "x" : "")} | {DemoReport.PerLifetime(r.AllocMutexAcquisitionsPerLifetime)} | {r.AllocMutexContended} | {(w == "mm" ? DemoReport.PerLifetime(r.CountersLockAcquisitionsPerLifetime) : "-")} |");
            }
            md.AppendLine().AppendLine(CultureInfo.InvariantCulture, $"![{w}: lifetimes per second](throughput-{w}.svg)").AppendLine();
            md.AppendLine(CultureInfo.InvariantCulture, $"![{w}: pcpu_alloc_mutex per lifetime](mutex-{w}.svg)").AppendLine();
            md.AppendLine("```").Append(DemoReport.LockTable(results, w)).AppendLine("```").AppendLine();
        }
        md.AppendLine("## Targets").AppendLine().AppendLine("| figure | target | measured | |").AppendLine("|---|---|---|---|");
        foreach (DemoReport.Target t in targets)
            md.AppendLine(CultureInfo.InvariantCulture, $"| {t.Name} | {t.Goal} | {t.Measured} | {(t.Met ? "met" : "missed")} |");
        return md.ToString();
    }
}
