using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Kmem.Workloads;

namespace Kmem.Cli;

/// <summary>The files `kmem demo` writes: results.json (the records of the runs in an envelope), two charts per workload, a Markdown summary.</summary>
internal static class DemoOutput
{
    // Relaxed escaping: the file is read as JSON, never pasted into HTML, and the default
    // encoder would write the informational version's '+' as \u002B.
    private static readonly JsonSerializerOptions s_json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

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

    /// <summary>The schema results.json follows; a change to its fields gets a new number.</summary>
    public const string Schema = "kmem-demo-results/2";

    /// <summary>
    /// results.json: the runs' records in an envelope that says which machine, runtime and
    /// commit they come from, when they ran and with what parameters. Version 1 was the bare
    /// array of <see cref="Records"/>; the records keep its field names.
    /// </summary>
    public sealed record Results(
        string Schema, DemoEnvironment.MachineInfo Machine, DemoEnvironment.RuntimeInfo Runtime, string Commit,
        DateTime StartedAt, double DurationSeconds, Parameters Parameters, IReadOnlyList<RunRecord> Records);

    /// <summary>What the demo was asked to run.</summary>
    /// <param name="Quick">--quick.</param>
    /// <param name="Seconds">Seconds measured per run.</param>
    /// <param name="WarmupSeconds">Seconds of warm-up before each run's measurement.</param>
    /// <param name="Threads">The thread counts.</param>
    /// <param name="Workloads">The workloads.</param>
    /// <param name="Modes">The modes.</param>
    public sealed record Parameters(bool Quick, double Seconds, double WarmupSeconds, IReadOnlyList<int> Threads,
        IReadOnlyList<string> Workloads, IReadOnlyList<string> Modes);

    public static Results Envelope(IReadOnlyList<RunRecord> records, DemoEnvironment env, Parameters parameters, TimeSpan duration) =>
        new(Schema, env.Machine, env.Runtime, env.Commit, env.StartedAt, Math.Round(duration.TotalSeconds, 3), parameters, records);

    public static void WriteJson(string path, Results results)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir != null)
            Directory.CreateDirectory(dir);
        File.WriteAllText(path, JsonSerializer.Serialize(results, s_json));
    }

    /// <summary>Reads a results.json that <see cref="WriteJson"/> wrote; refuses another schema.</summary>
    public static Results ReadJson(string path)
    {
        Results results = JsonSerializer.Deserialize<Results>(File.ReadAllText(path), s_json)
            ?? throw new InvalidDataException($"{path}: empty");
        return results.Schema == Schema ? results : throw new InvalidDataException($"{path}: schema {results.Schema}, not {Schema}");
    }

    /// <summary>Writes results.json, the charts (SVG and PNG) and summary.md into <paramref name="folder"/>; returns the files.</summary>
    public static List<string> WriteFolder(string folder, Results results, IReadOnlyList<SeedRunResult> runs, IReadOnlyList<DemoReport.Target> targets, string machine)
    {
        Directory.CreateDirectory(folder);
        var files = new List<string>();
        string json = Path.Combine(folder, "results.json");
        WriteJson(json, results);
        files.Add(json);
        // The charts say what results.json says: the same machine, commit and start.
        files.AddRange(DemoCharts.Write(folder, results.Records, new DemoEnvironment(results.Machine, results.Runtime, results.Commit, results.StartedAt)));
        string md = Path.Combine(folder, "summary.md");
        File.WriteAllText(md, Markdown(results.Records, runs, targets, machine));
        files.Add(md);
        return files;
    }

    private static string Markdown(IReadOnlyList<RunRecord> records, IReadOnlyList<SeedRunResult> results, IReadOnlyList<DemoReport.Target> targets, string machine)
    {
        var md = new StringBuilder();
        md.AppendLine("# kmem demo: the seed series' experiment").AppendLine().AppendLine(machine).AppendLine();
        foreach (string w in SeedWorkload.Workloads)
        {
            md.AppendLine(CultureInfo.InvariantCulture, $"## {w}-like").AppendLine();
            md.AppendLine("| threads | mode | lifetimes/s | vs baseline | no-percpu / this | pcpu_alloc_mutex per lifetime | contended | percpu_counters_lock per lifetime |");
            md.AppendLine("|---|---|---|---|---|---|---|---|");
            foreach (RunRecord r in records.Where(r => r.Workload == w))
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
