using System.Globalization;
using Kmem.Cli;

namespace Kmem.Cli.Tests;

/// <summary>What `kmem demo` says of the machine and build it ran on.</summary>
public sealed class DemoEnvironmentTests
{
    [Fact]
    public void The_environment_of_this_process_names_its_cores_and_commit()
    {
        DemoEnvironment env = DemoEnvironment.Current();
        Assert.Equal(Environment.ProcessorCount, env.Machine.Cores);
        Assert.Equal(DateTimeKind.Utc, env.StartedAt.Kind);
        Assert.InRange(env.StartedAt, DateTime.UtcNow.AddMinutes(-5), DateTime.UtcNow.AddSeconds(1));
        Assert.NotEqual("", env.Machine.Cpu);
        Assert.True(env.Machine.MemoryBytes > 0);
        // The tests build from a clone, so the SDK put the commit in the informational version.
        Assert.Matches("^[0-9a-f]{40}$", env.Commit);
        Assert.EndsWith("+" + env.Commit, KmemApp.Version);
        Assert.StartsWith(string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessorCount} logical cores, "), env.Subtitle);
        Assert.EndsWith($"commit {env.Commit[..12]}", env.Subtitle);
    }

    [Fact]
    public void A_commit_is_shortened_only_when_it_is_a_hash()
    {
        DemoEnvironment env = DemoSamples.Environment(cores: 2);
        Assert.Equal("0123456789ab", env.ShortCommit);
        Assert.Equal("unknown", (env with { Commit = "unknown" }).ShortCommit);
    }
}
