#include "node/identity.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "absl/strings/str_cat.h"

namespace exo::node {
namespace {

std::string TempStateDir(const std::string& name) {
  const std::string dir =
      absl::StrCat(::testing::TempDir(), "/identity_test_", getpid(), "_", name, "/state");
  std::filesystem::remove_all(dir);
  return dir;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

TEST(Identity, NewIdsAre128BitHexAndDistinct) {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    const std::string id = NewNodeId();
    EXPECT_TRUE(IsValidNodeId(id)) << id;
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 100u);
  EXPECT_FALSE(IsValidNodeId("ABCDEFABCDEFABCDEFABCDEFABCDEFAB"));
  EXPECT_FALSE(IsValidNodeId("abc"));
  EXPECT_FALSE(IsValidNodeId(""));
}

TEST(Identity, IdIsCreatedOnceAndPersisted) {
  const std::string dir = TempStateDir("persist");
  absl::StatusOr<std::string> first = LoadOrCreateNodeId(dir);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(ReadFile(dir + "/node_id"), *first);
  absl::StatusOr<std::string> second = LoadOrCreateNodeId(dir);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, *first);
}

TEST(Identity, RenewWritesADifferentIdThatSticks) {
  const std::string dir = TempStateDir("renew");
  const std::string old_id = *LoadOrCreateNodeId(dir);
  absl::StatusOr<std::string> renewed = RenewNodeId(dir, old_id);
  ASSERT_TRUE(renewed.ok()) << renewed.status();
  EXPECT_NE(*renewed, old_id);
  EXPECT_TRUE(IsValidNodeId(*renewed));
  EXPECT_EQ(*LoadOrCreateNodeId(dir), *renewed);
  EXPECT_FALSE(std::filesystem::exists(dir + "/node_id.tmp"));
}

TEST(Identity, CorruptIdFileIsAnErrorNotSilentlyReplaced) {
  const std::string dir = TempStateDir("corrupt");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/node_id") << "not an id\n";
  absl::StatusOr<std::string> id = LoadOrCreateNodeId(dir);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(id.status().message()), ::testing::HasSubstr("delete it"));
  EXPECT_EQ(ReadFile(dir + "/node_id"), "not an id");
}

TEST(Identity, UnwritableStateDirIsAClearError) {
  const std::string dir = TempStateDir("blocked");
  std::filesystem::create_directories(std::filesystem::path(dir).parent_path());
  std::ofstream(dir) << "a file where the directory should be";
  absl::StatusOr<std::string> id = LoadOrCreateNodeId(dir + "/sub");
  ASSERT_FALSE(id.ok());
  EXPECT_THAT(std::string(id.status().message()), ::testing::HasSubstr("--state_dir"));
}

}  // namespace
}  // namespace exo::node
