namespace Kmem.Workloads;

/// <summary>
/// The seed series' experiment: both workloads, every mode, at each thread count. Modes
/// run back to back at each thread count, so machine noise hits them alike.
/// </summary>
public static class SeedExperiment
{
    public static readonly int[] ThreadCounts = [1, 2, 4, 8];

    /// <summary>Runs every (workload, threads, mode); <paramref name="starting"/> is told before each run.</summary>
    public static List<SeedRunResult> Run(TimeSpan duration, TimeSpan warmup, Action<string, string, int>? starting = null,
        Action<SeedRunResult>? finished = null)
    {
        var results = new List<SeedRunResult>();
        foreach (string workload in SeedWorkload.Workloads)
        {
            foreach (int threads in ThreadCounts)
            {
                foreach (string mode in SeedWorkload.Modes)
                {
                    starting?.Invoke(workload, mode, threads);
                    SeedRunResult r = SeedWorkload.Run(workload, mode, threads, duration, warmup);
                    results.Add(r);
                    finished?.Invoke(r);
                }
            }
        }
        return results;
    }

    public static int Runs => SeedWorkload.Workloads.Length * ThreadCounts.Length * SeedWorkload.Modes.Length;

    /// <summary>The run of the same workload and thread count in another mode.</summary>
    public static SeedRunResult? Peer(IEnumerable<SeedRunResult> results, SeedRunResult r, string mode) =>
        results.FirstOrDefault(x => x.Workload == r.Workload && x.Threads == r.Threads && x.Mode == mode);
}
