using Hci.Cli;

// hci: the admin tool of an Hci cluster (nodes, volumes, extents and their replicas), over the cluster store.
return await HciCommand.RunAsync(args, Console.Out, Console.Error);
