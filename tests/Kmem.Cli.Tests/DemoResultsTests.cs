using System.Text.Json;
using Kmem.Cli;

namespace Kmem.Cli.Tests;

/// <summary>results.json: the envelope around the records, written and read back.</summary>
public sealed class DemoResultsTests : IDisposable
{
    private readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("kmem-demo-results-");

    public void Dispose() => _dir.Delete(recursive: true);

    private static DemoOutput.Results Sample() => DemoOutput.Envelope(DemoSamples.Records(), DemoSamples.Environment(cores: 2),
        new DemoOutput.Parameters(true, 0.6, 0.15, DemoSamples.Threads, ["mm", "tc"], DemoSamples.Modes), TimeSpan.FromSeconds(31.41592));

    [Fact]
    public void Results_json_has_the_envelope_and_the_records_under_their_first_names()
    {
        string path = Path.Combine(_dir.FullName, "results.json");
        DemoOutput.WriteJson(path, Sample());

        using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(path));
        JsonElement root = doc.RootElement;
        Assert.Equal(["schema", "machine", "runtime", "commit", "startedAt", "durationSeconds", "parameters", "records"],
            root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("kmem-demo-results/2", root.GetProperty("schema").GetString());
        Assert.Equal(2, root.GetProperty("machine").GetProperty("cores").GetInt32());
        Assert.Equal("Test CPU 9000 @ 1.00GHz", root.GetProperty("machine").GetProperty("cpu").GetString());
        Assert.Equal("TestOS 1 (synthetic)", root.GetProperty("machine").GetProperty("os").GetString());
        Assert.Equal(8L << 30, root.GetProperty("machine").GetProperty("memoryBytes").GetInt64());
        Assert.Equal("workstation", root.GetProperty("runtime").GetProperty("gcMode").GetString());
        Assert.Equal("10.0.0", root.GetProperty("runtime").GetProperty("version").GetString());
        Assert.Equal("0123456789abcdef0123456789abcdef01234567", root.GetProperty("commit").GetString());
        Assert.Contains("\"kmemVersion\": \"1.0.0+0123456789abcdef", File.ReadAllText(path));
        // ISO 8601 in UTC, with the Z.
        Assert.Equal("2026-12-04T05:06:07.89Z", root.GetProperty("startedAt").GetString());
        Assert.Equal(31.416, root.GetProperty("durationSeconds").GetDouble());
        Assert.True(root.GetProperty("parameters").GetProperty("quick").GetBoolean());
        Assert.Equal(0.6, root.GetProperty("parameters").GetProperty("seconds").GetDouble());
        Assert.Equal([1, 2, 4, 8], root.GetProperty("parameters").GetProperty("threads").EnumerateArray().Select(t => t.GetInt32()));

        // The records keep the names of schema 1, the bare array, for whatever reads them.
        JsonElement[] records = [.. root.GetProperty("records").EnumerateArray()];
        Assert.Equal(32, records.Length);
        Assert.Equal(
            ["workload", "mode", "threads", "opsPerSecond", "lifetimes", "allocMutexAcquisitions", "allocMutexAcquisitionsPerLifetime",
             "allocMutexContended", "gainOverBaseline", "noPercpuOverThis", "checkFailures", "seconds", "locks",
             "countersLockAcquisitions", "countersLockAcquisitionsPerLifetime"],
            records[0].EnumerateObject().Select(p => p.Name));
        Assert.Equal(["name", "acquired", "contended", "avgWaitNs", "totalWaitNs", "maxWaitNs", "minWaitNs"],
            records[0].GetProperty("locks")[0].EnumerateObject().Select(p => p.Name));
        Assert.Equal(2, records[0].GetProperty("allocMutexAcquisitionsPerLifetime").GetDouble());
    }

    [Fact]
    public void Results_json_round_trips()
    {
        DemoOutput.Results written = Sample();
        string path = Path.Combine(_dir.FullName, "sub", "runs.json");
        DemoOutput.WriteJson(path, written);
        DemoOutput.Results read = DemoOutput.ReadJson(path);

        Assert.Equal(DemoOutput.Schema, read.Schema);
        Assert.Equal(written.Machine, read.Machine);
        Assert.Equal(written.Runtime, read.Runtime);
        Assert.Equal(written.Commit, read.Commit);
        Assert.Equal(written.StartedAt, read.StartedAt);
        Assert.Equal(DateTimeKind.Utc, read.StartedAt.Kind);
        Assert.Equal(written.DurationSeconds, read.DurationSeconds);
        Assert.Equal(written.Parameters.Threads, read.Parameters.Threads);
        Assert.Equal(written.Parameters.Modes, read.Parameters.Modes);
        Assert.Equal(written.Records.Count, read.Records.Count);
        for (int i = 0; i < written.Records.Count; i++)
        {
            // The records hold a list, which record equality compares by reference.
            Assert.Equal(written.Records[i] with { Locks = [] }, read.Records[i] with { Locks = [] });
            Assert.Equal(written.Records[i].Locks, read.Records[i].Locks);
        }
    }

    [Fact]
    public void Reading_refuses_another_schema()
    {
        string path = Path.Combine(_dir.FullName, "results.json");
        DemoOutput.WriteJson(path, Sample() with { Schema = "kmem-demo-results/3" });
        Assert.Contains("schema kmem-demo-results/3", Assert.Throws<InvalidDataException>(() => DemoOutput.ReadJson(path)).Message);
        // Schema 1 was a bare array.
        File.WriteAllText(path, "[]");
        Assert.ThrowsAny<JsonException>(() => DemoOutput.ReadJson(path));
    }
}
