using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Kmem.Tests;

/// <summary>Runs alone: it builds a project, which takes both cores for a few seconds and would slow timed tests beside it.</summary>
[CollectionDefinition(nameof(ReadmeExamplesCollection), DisableParallelization = true)]
public sealed class ReadmeExamplesCollection;

/// <summary>
/// Every <c>```csharp</c> block of README.md is a whole Program.cs that a user pastes into a
/// console app referencing Kmem. This compiles them all, in one generated project built
/// once (one build for all blocks costs a few seconds; a project per block would cost that
/// per block), and runs each in a process of its own, which must exit 0.
/// </summary>
/// <remarks>
/// One project cannot hold several files of top-level statements, so each block becomes a
/// file of its own: its <c>using</c> directives, then <c>namespace Readme.BlockN;</c>, its
/// statements as the body of <c>Example.Run</c>, and its type declarations after (the
/// layout every block keeps: usings, statements, types). That is the same code the
/// compiler sees for a top-level program, less the namespace; <c>#line</c> directives make
/// an error point at README.md's own line. The project is what the README tells a user to
/// write (implicit usings, nullable, <c>AllowUnsafeBlocks</c>), with warnings as errors so
/// the examples stay clean, and it references the Kmem.dll these tests run against. The
/// blocks run with lock validation on, as these tests do.
/// </remarks>
[Collection(nameof(ReadmeExamplesCollection))]
public sealed partial class ReadmeExamplesTests
{
    private static readonly TimeSpan BuildTimeout = TimeSpan.FromMinutes(5);
    private static readonly TimeSpan RunTimeout = TimeSpan.FromMinutes(1);

    [Fact]
    public void Every_csharp_block_of_the_README_compiles_and_runs_as_a_program()
    {
        string root = RepositoryRoot();
        IReadOnlyList<Block> blocks = ExtractBlocks(File.ReadAllText(Path.Combine(root, "README.md")));
        Assert.NotEmpty(blocks);

        string dir = Path.Combine(Path.GetTempPath(), "kmem-readme-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            WriteProject(dir, blocks, Path.Combine(root, "README.md"));
            ProcessResult build = RunDotnet(dir, BuildTimeout, "build", "-nologo", "-v:q", "-nodeReuse:false",
                "-p:UseSharedCompilation=false", "-p:ImportDirectoryBuildProps=false",
                "-p:ImportDirectoryBuildTargets=false", "-p:ImportDirectoryPackagesProps=false", "-o", "out");
            Assert.True(build.ExitCode == 0, $"the README's C# blocks do not compile:\n{build.Output}");

            foreach (Block b in blocks)
            {
                ProcessResult run = RunDotnet(dir, RunTimeout, Path.Combine("out", "Readme.dll"), b.Index.ToString(CultureInfo.InvariantCulture));
                Assert.True(run.ExitCode == 0, $"README.md's C# block at line {b.Line} exited {run.ExitCode}:\n{run.Output}");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void A_block_splits_into_usings_statements_and_types()
    {
        const string code = """
            using Kmem;
            // a comment

            using var c = new SlabCache<P>("p");
            unsafe
            {
                P* p = c.Alloc();
            }

            [System.Runtime.CompilerServices.InlineArray(2)] struct Two { int _x; }
            unsafe struct P { public fixed byte B[4]; }
            """;
        Parts parts = Split(code.Split('\n'));
        Assert.Equal(["using Kmem;"], parts.Usings);
        Assert.Equal(1, parts.StatementsStart);
        Assert.Equal("using var c = new SlabCache<P>(\"p\");", parts.Statements[2]);
        Assert.Equal(9, parts.TypesStart);
        Assert.StartsWith("[System.Runtime", parts.Types[0], StringComparison.Ordinal);
        Assert.Equal(2, parts.Types.Count);
    }

    [Fact]
    public void Blocks_are_found_with_their_line_numbers()
    {
        const string markdown = "# T\n\n```csharp\nA();\n```\n\n```sh\nls\n```\n```csharp\nB();\n```\n";
        IReadOnlyList<Block> blocks = ExtractBlocks(markdown);
        Assert.Equal([(0, 4, "A();"), (1, 11, "B();")], blocks.Select(b => (b.Index, b.Line, string.Join("\n", b.Lines))));
    }

    /// <summary>A C# block: its index, the README line of its first code line, and its lines.</summary>
    internal sealed record Block(int Index, int Line, IReadOnlyList<string> Lines);

    /// <summary>A block cut in three; the starts are line offsets within the block.</summary>
    internal sealed record Parts(IReadOnlyList<string> Usings, int StatementsStart, IReadOnlyList<string> Statements, int TypesStart, IReadOnlyList<string> Types);

    internal static IReadOnlyList<Block> ExtractBlocks(string markdown)
    {
        string[] lines = markdown.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        var blocks = new List<Block>();
        for (int i = 0; i < lines.Length; i++)
        {
            if (lines[i].TrimEnd() != "```csharp")
                continue;
            int start = i + 1;
            int end = start;
            while (end < lines.Length && lines[end].TrimEnd() != "```")
                end++;
            blocks.Add(new Block(blocks.Count, start + 1, lines[start..end]));
            i = end;
        }
        return blocks;
    }

    /// <summary>
    /// Usings are the leading <c>using Name;</c> lines (blank and comment lines among them
    /// are kept with the statements); the types start at the first line that begins, in
    /// column 0, with an attribute or a type declaration.
    /// </summary>
    internal static Parts Split(IReadOnlyList<string> lines)
    {
        int first = 0;
        var usings = new List<string>();
        while (first < lines.Count && (UsingDirective().IsMatch(lines[first]) || lines[first].Trim().Length == 0))
        {
            if (lines[first].Trim().Length != 0)
                usings.Add(lines[first].Trim());
            first++;
        }
        int types = first;
        while (types < lines.Count && !TypeDeclaration().IsMatch(lines[types]))
            types++;
        return new Parts(usings, first, [.. lines.Skip(first).Take(types - first)], types, [.. lines.Skip(types)]);
    }

    [GeneratedRegex(@"^using\s+(static\s+)?[A-Za-z_][\w.]*\s*;\s*$")]
    private static partial Regex UsingDirective();

    [GeneratedRegex(@"^(\[|((public|internal|file|static|unsafe|readonly|sealed|abstract|partial|ref)\s+)*(struct|class|record|enum|interface|delegate)\b)")]
    private static partial Regex TypeDeclaration();

    private static void WriteProject(string dir, IReadOnlyList<Block> blocks, string readme)
    {
        string kmem = typeof(SlabCache).Assembly.Location;
        File.WriteAllText(Path.Combine(dir, "Readme.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <Nullable>enable</Nullable>
                <AllowUnsafeBlocks>true</AllowUnsafeBlocks>
                <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
                <UseAppHost>false</UseAppHost>
              </PropertyGroup>
              <ItemGroup>
                <Reference Include="Kmem" HintPath="{kmem}" />
              </ItemGroup>
            </Project>
            """);
        var main = new StringBuilder("return args[0] switch\n{\n");
        foreach (Block b in blocks)
        {
            Parts parts = Split(b.Lines);
            string line(int offset) => $"#line {b.Line + offset} \"{readme}\"";
            // Top-level statements that await make an async Main; so does Run then.
            bool async = parts.Statements.Any(s => s.Contains("await ", StringComparison.Ordinal));
            var file = new StringBuilder();
            foreach (string u in parts.Usings)
                file.AppendLine(u);
            file.AppendLine(CultureInfo.InvariantCulture, $"namespace Readme.Block{b.Index};");
            file.AppendLine("internal static class Example");
            file.AppendLine("{");
            file.AppendLine(async ? "    public static async Task<int> Run(string[] args)" : "    public static int Run(string[] args)");
            file.AppendLine("    {");
            file.AppendLine(line(parts.StatementsStart));
            foreach (string s in parts.Statements)
                file.AppendLine(s);
            file.AppendLine("#line default");
            // A block that ends in a throw leaves this unreachable, which a top-level program does not report.
            file.AppendLine("#pragma warning disable CS0162");
            file.AppendLine("        return 0;");
            file.AppendLine("#pragma warning restore CS0162");
            file.AppendLine("    }");
            file.AppendLine("}");
            file.AppendLine(line(parts.TypesStart));
            foreach (string t in parts.Types)
                file.AppendLine(t);
            File.WriteAllText(Path.Combine(dir, $"Block{b.Index}.cs"), file.ToString());
            main.AppendLine(CultureInfo.InvariantCulture,
                $"    \"{b.Index}\" => Readme.Block{b.Index}.Example.Run(args[1..]){(async ? ".GetAwaiter().GetResult()" : "")},");
        }
        main.AppendLine("    _ => 2,\n};");
        File.WriteAllText(Path.Combine(dir, "Program.cs"), main.ToString());
    }

    private static string RepositoryRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            if (File.Exists(Path.Combine(d.FullName, "Kmem.slnx")))
                return d.FullName;
        }
        throw new InvalidOperationException($"no Kmem.slnx above {AppContext.BaseDirectory}");
    }

    private sealed record ProcessResult(int ExitCode, string Output);

    /// <summary>Runs the dotnet that runs these tests, in <paramref name="dir"/>; standard output and error together.</summary>
    private static ProcessResult RunDotnet(string dir, TimeSpan timeout, params string[] args)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            WorkingDirectory = dir,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args)
            start.ArgumentList.Add(a);
        // dotnet test's own MSBuild settings would point the inner build at the outer one's.
        foreach (string name in start.Environment.Keys.Where(k => k.StartsWith("MSBUILD", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(name);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["KMEM_LOCK_VALIDATION"] = "1";
        using var process = Process.Start(start)!;
        var output = new StringBuilder();
        process.OutputDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            lock (output)
                return new ProcessResult(-1, $"timed out after {timeout.TotalSeconds} s\n{output}");
        }
        process.WaitForExit();   // the redirected streams are drained
        lock (output)
            return new ProcessResult(process.ExitCode, output.ToString());
    }
}
