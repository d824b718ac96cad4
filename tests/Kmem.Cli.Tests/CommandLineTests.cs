using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Kmem.Cli;
using Spectre.Console.Cli;
using Spectre.Console.Cli.Testing;

namespace Kmem.Cli.Tests;

/// <summary>
/// The `kmem` command line as a user meets it: help and version exit 0 without running
/// anything, every line kmem cannot run exits 2 with a message saying what is wrong.
/// Each test builds the app from <see cref="KmemApp.Configure"/>, as Program.cs does.
/// </summary>
public partial class CommandLineTests
{
    private static CommandAppResult Run(params string[] args)
    {
        var app = new CommandAppTester();
        app.Configure(KmemApp.Configure);
        return app.Run(args);
    }

    public static TheoryData<string> Commands => ["demo", "stress", "bench", "top", "slabinfo"];

    /// <summary>The start of the first line a command prints when it really runs (help never prints it).</summary>
    private static string Header(string command) => $"kmem {command}:";

    [Theory]
    [InlineData("--help")]
    [InlineData("-h")]
    [InlineData]
    public void Root_help_exits_0_and_lists_every_command(params string[] args)
    {
        CommandAppResult r = Run(args);
        Assert.Equal(0, r.ExitCode);
        Assert.Contains("USAGE:", r.Output);
        Assert.Contains("kmem [OPTIONS] <COMMAND>", r.Output);
        foreach (string command in new[] { "demo", "stress", "bench", "top", "slabinfo" })
            Assert.Matches(new Regex($@"^\s+{command}\s+\S", RegexOptions.Multiline), r.Output);
        Assert.Contains("--version", r.Output);
    }

    [Theory]
    [InlineData("demo", "--quick", "--seconds", "--json <FILE>", "--out <DIR>")]
    [InlineData("stress", "--quick", "--threads <N>", "--seconds")]
    [InlineData("bench", "--quick", "--pages", "--kmalloc-only", "--big")]
    [InlineData("top", "--process-id <PID>", "--interval <SECONDS>", "--count <N>", "--sort <KEY>")]
    [InlineData("slabinfo", "--process-id <PID>", "--timeout <SECONDS>")]
    public void Command_help_lists_its_options_and_runs_nothing(string command, params string[] options)
    {
        foreach (string help in new[] { "--help", "-h" })
        {
            CommandAppResult r = Run(command, help);
            Assert.Equal(0, r.ExitCode);
            Assert.Contains($"kmem {command} [OPTIONS]", r.Output);
            Assert.Contains("DESCRIPTION:", r.Output);
            foreach (string option in options)
                Assert.Contains(option, r.Output);
            Assert.DoesNotContain(Header(command), r.Output);
        }
    }

    [Theory]
    [InlineData("--version")]
    [InlineData("-v")]
    public void Version_prints_the_informational_version(string option)
    {
        CommandAppResult r = Run(option);
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(KmemApp.Version, r.Output);
        Assert.Matches(@"^\d+\.\d+\.\d+", KmemApp.Version);
    }

    [Fact]
    public void An_unknown_command_exits_2_naming_it()
    {
        CommandAppResult r = Run("bogus");
        Assert.Equal(KmemApp.UsageError, r.ExitCode);
        Assert.Contains("Unknown command 'bogus'", r.Output);
        Assert.DoesNotContain("USAGE:", r.Output);
    }

    [Theory]
    [MemberData(nameof(Commands))]
    public void An_unknown_option_exits_2_naming_it(string command)
    {
        foreach (string[] args in new[] { new[] { command, "--bogus" }, new[] { command, "--bogus", "value" }, new[] { command, "-x" } })
        {
            CommandAppResult r = Run(args);
            Assert.Equal(KmemApp.UsageError, r.ExitCode);
            Assert.Contains($"Unknown option '{args[1]}' (kmem {command} --help lists the options)", r.Output);
            Assert.DoesNotContain(Header(command), r.Output);
        }
    }

    [Fact]
    public void An_unknown_option_before_the_command_exits_2()
    {
        CommandAppResult r = Run("--bogus", "demo");
        Assert.Equal(KmemApp.UsageError, r.ExitCode);
        Assert.Contains("Unexpected option 'bogus'", r.Output);
    }

    [Theory]
    [InlineData("demo")]
    [InlineData("stress")]
    [InlineData("bench")]
    public void A_value_given_to_a_flag_exits_2(string command)
    {
        CommandAppResult r = Run(command, "--quick=5");
        Assert.Equal(KmemApp.UsageError, r.ExitCode);
        Assert.Contains("Flags cannot be assigned a value", r.Output);
    }

    [Theory]
    // --seconds keeps a regression (the command running after all) to seconds.
    [InlineData("--out", "demo", "--seconds", "0.01", "--out")]
    [InlineData("--out", "demo", "--seconds", "0.01", "--out", "--quick")]
    [InlineData("--json", "demo", "--seconds", "0.01", "--json")]
    [InlineData("--threads", "stress", "--seconds", "0.01", "--threads")]
    [InlineData("--seconds", "stress", "--seconds")]
    public void An_option_without_its_value_exits_2(string option, params string[] args)
    {
        CommandAppResult r = Run(args);
        Assert.Equal(KmemApp.UsageError, r.ExitCode);
        Assert.Contains($"Option '{option[2..]}' is defined but no value has been provided", r.Output);
        // Strict parsing would have taken the default command's name for the value (see KmemApp).
        Assert.DoesNotContain("__default_command", r.Output);
        Assert.False(Directory.Exists("__default_command"));
    }

    [Theory]
    [InlineData("--big needs --pages", "bench", "--big")]
    [InlineData("--big needs --pages", "bench", "--quick", "--big")]
    [InlineData("--kmalloc-only needs --pages", "bench", "--kmalloc-only")]
    [InlineData("--threads must be from 2 to 64", "stress", "--threads", "0")]
    [InlineData("--threads must be from 2 to 64", "stress", "--threads", "1")]
    [InlineData("--threads must be from 2 to 64", "stress", "--threads", "65")]
    [InlineData("Failed to convert 'x' to Int32", "stress", "--threads", "x")]
    [InlineData("--seconds must be more than 0", "stress", "--seconds", "0")]
    [InlineData("--seconds must be more than 0", "demo", "--seconds", "-1")]
    [InlineData("--seconds must be more than 0", "demo", "--seconds", "NaN")]
    [InlineData("Unexpected argument 'extra': kmem demo takes none", "demo", "--", "extra")]
    [InlineData("Unknown command 'extra'", "slabinfo", "extra")]
    [InlineData("kmem top needs -p PID", "top")]
    [InlineData("kmem top needs -p PID", "top", "--count", "1")]
    [InlineData("-p takes a process id, a number more than 0: '0' is not one", "top", "-p", "0")]
    [InlineData("-p takes a process id, a number more than 0: '-5' is not one", "slabinfo", "-p", "-5")]
    [InlineData("-p takes a process id, a number more than 0: 'me' is not one", "top", "-p", "me")]
    [InlineData("--interval must be from 0.1 to 3600 seconds", "top", "-p", "1", "--interval", "0.05")]
    [InlineData("--interval must be from 0.1 to 3600 seconds", "top", "-p", "1", "--interval", "NaN")]
    [InlineData("--count must be 0 (no limit) or more", "top", "-p", "1", "--count", "-1")]
    [InlineData("Failed to convert 'x' to Int32", "top", "-p", "1", "--count", "x")]
    [InlineData("Failed to convert 'size' to TopSort", "top", "-p", "1", "--sort", "size")]
    [InlineData("--timeout needs -p", "slabinfo", "--timeout", "5")]
    [InlineData("--timeout must be more than 0", "slabinfo", "-p", "1", "--timeout", "0")]
    public void A_bad_value_or_combination_exits_2_saying_why(string message, params string[] args)
    {
        CommandAppResult r = Run(args);
        Assert.Equal(KmemApp.UsageError, r.ExitCode);
        Assert.Contains(message, r.Output);
    }

    [Fact]
    public void Slabinfo_explains_where_the_table_is_instead_of_an_empty_one()
    {
        CommandAppResult r = Run("slabinfo");
        Assert.Equal(0, r.ExitCode);
        Assert.StartsWith("kmem slabinfo: slab caches live in the process that creates them", r.Output);
        Assert.Contains("kmem slabinfo -p PID", r.Output);
        Assert.Contains("kmem top -p PID", r.Output);
        Assert.Contains(SlabInfoCommand.CodeExample, r.Output);
        Assert.Contains("kmem stress --quick", r.Output);
        Assert.DoesNotContain("─", r.Output);   // no table
    }

    [Fact]
    public void Stress_runs_for_real_and_prints_no_progress_lines_when_not_on_a_terminal()
    {
        CommandAppResult r = Run("stress", "--threads", "2", "--seconds", "0.2");
        Assert.Equal(0, r.ExitCode);
        Assert.StartsWith("kmem stress: 2 threads, 4 caches + kmalloc, 0.2 s", r.Output);
        Assert.Contains("slabinfo with the working sets live", r.Output);
        Assert.Contains("demo_inode", r.Output);
        Assert.Contains("every object's contents checked: no corruption", r.Output);
        Assert.DoesNotMatch(ProgressLine(), r.Output);
    }

    [Fact]
    public void Misuse_of_the_allocator_exits_2_with_its_message()
    {
        var app = new CommandAppTester();
        app.Configure(config =>
        {
            KmemApp.Configure(config);
            config.AddDelegate("misuse", (_, _) => FreeForeignBlock());
        });
        CommandAppResult r = app.Run("misuse");
        Assert.Equal(KmemApp.UsageError, r.ExitCode);
        Assert.StartsWith("kmem: ", r.Output);
        Assert.Contains("not held by any slab", r.Output);
    }

    [Fact]
    public void Any_other_exception_is_a_bug_and_is_not_turned_into_exit_2()
    {
        var app = new CommandAppTester();
        app.Configure(config =>
        {
            KmemApp.Configure(config);
            config.AddDelegate("bug", (_, _) => throw new InvalidOperationException("a bug"));
        });
        Assert.Equal("a bug", Assert.Throws<InvalidOperationException>(() => app.Run("bug")).Message);
    }

    private static unsafe int FreeForeignBlock()
    {
        void* native = NativeMemory.Alloc(64);
        try
        {
            Kmalloc.Free(native);
            return 0;
        }
        finally
        {
            NativeMemory.Free(native);
        }
    }

    /// <summary>What Spectre's fallback progress renderer prints: "description: 25%".</summary>
    [GeneratedRegex(@"^.*: \d+%$", RegexOptions.Multiline)]
    internal static partial Regex ProgressLine();
}
