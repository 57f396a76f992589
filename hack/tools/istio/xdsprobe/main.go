// Command xdsprobe stands in for Envoy in the real-Istio test suite (test/istio): pilot-agent
// runs without Envoy there (DISABLE_ENVOY=true), and xdsprobe connects to the agent's XDS proxy
// on its Unix socket, as Envoy would, asks for the clusters once and prints what came back as
// one JSON line. The agent forwards the request to the istiod its configuration names, so an
// answer shows that the agent reached an istiod, and istiod's own connection list shows which:
// xdsprobe keeps the stream (and so the agent's upstream connection) open until its standard
// input is closed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

const clusterType = "type.googleapis.com/envoy.config.cluster.v3.Cluster"

func main() {
	socket := flag.String("socket", "", "the agent's XDS Unix socket (<istio-envoy volume>/XDS)")
	node := flag.String("node", "", "Envoy's node ID: sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.cluster.local")
	meta := flag.String("metadata", "{}", "node metadata, a JSON object (what Envoy's bootstrap would carry)")
	timeout := flag.Duration("timeout", 20*time.Second, "give up after this long")
	flag.Parse()
	if err := probe(*socket, *node, *meta, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "xdsprobe:", err)
		os.Exit(1)
	}
}

// result is what the test reads.
type result struct {
	TypeURL   string `json:"typeUrl"`
	Version   string `json:"versionInfo"`
	Resources int    `json:"resources"`
}

func probe(socket, node, meta string, timeout time.Duration) error {
	var md map[string]any
	if err := json.Unmarshal([]byte(meta), &md); err != nil {
		return fmt.Errorf("-metadata: %w", err)
	}
	metadata, err := structpb.NewStruct(md)
	if err != nil {
		return fmt.Errorf("-metadata: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx, grpc.WaitForReady(true))
	if err != nil {
		return fmt.Errorf("opening the ADS stream: %w", err)
	}
	if err := stream.Send(&discovery.DiscoveryRequest{
		Node:    &core.Node{Id: node, Metadata: metadata},
		TypeUrl: clusterType,
	}); err != nil {
		return fmt.Errorf("sending the request: %w", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("waiting for the answer: %w", err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(result{resp.TypeUrl, resp.VersionInfo, len(resp.Resources)}); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // hold the connection until the caller is done looking
	return nil
}
