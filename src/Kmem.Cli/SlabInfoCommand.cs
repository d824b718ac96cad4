using System.Diagnostics.CodeAnalysis;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Kmem.Cli;

/// <summary>The options of `kmem slabinfo`: none yet.</summary>
internal sealed class SlabInfoSettings : CommandSettings;

/// <summary>
/// `kmem slabinfo`: slab caches live inside the process that creates them, and this
/// process creates none, so a table of its own would always be empty, which reads as
/// "the allocator holds nothing" when it says nothing at all. Until the tool can read
/// another process's caches, it says so and shows the two ways to see a real table: from
/// the program's own code, or from the workload of `kmem stress`.
/// </summary>
[SuppressMessage("Performance", "CA1812", Justification = "Spectre.Console.Cli creates it.")]
internal sealed class SlabInfoCommand(IAnsiConsole console) : KmemCommand<SlabInfoSettings>
{
    /// <summary>What the command prints as the way to get the table from code.</summary>
    public const string CodeExample = "Console.WriteLine(Kmem.SlabInfo.Format());";

    public override int Execute(CommandContext context, SlabInfoSettings settings, CancellationToken cancellationToken)
    {
        console.WriteLine("kmem slabinfo: slab caches live in the process that creates them; kmem has none of its own, "
            + "and it cannot read another process's caches yet.");
        console.WriteLine("To see the table of a program that uses Kmem, print it from that program:");
        console.WriteLine($"    {CodeExample}    // /proc/slabinfo-style text; Kmem.SlabInfo.Snapshot() for the figures");
        console.WriteLine("To see it over a real workload: kmem stress --quick (the table while its objects are live).");
        return 0;
    }
}
